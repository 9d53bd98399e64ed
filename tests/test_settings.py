"""qwen3_rerank.settings: the default model, the environment variables and the engine factory.

Nothing here loads a model or opens a connection: option checks read the engine class's signature.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qwen3_rerank import ConfigurationError, RerankResult, settings
from qwen3_rerank.settings import (
    DEFAULT_MODEL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    build_engine,
    build_reranker,
    engine_kwargs,
    reranker_kwargs,
    resolve_api_key,
    resolve_base_urls,
    resolve_model,
    result_metadata,
    validate_engine_options,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def test_names_and_default():
    assert DEFAULT_MODEL == "Qwen/Qwen3-Reranker-0.6B"
    assert (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY) == (
        "QWEN3_RERANK_MODEL",
        "QWEN3_RERANK_BASE_URL",
        "QWEN3_RERANK_API_KEY",
    )
    assert settings.__all__ == sorted(settings.__all__)


def test_remote_engine_reads_the_same_api_key_variable():
    from qwen3_rerank.engines import remote

    assert remote.API_KEY_ENV == ENV_API_KEY


# -- model ------------------------------------------------------------------------------------
def test_model_explicit_then_environment_then_default(monkeypatch, tmp_path):
    assert resolve_model(None) == DEFAULT_MODEL
    assert resolve_model(None, engine="vllm") == DEFAULT_MODEL
    assert resolve_model(None, engine="remote") is None  # the server says which model it serves
    monkeypatch.setenv(ENV_MODEL, "org/from-env")
    assert resolve_model(None) == "org/from-env"
    assert resolve_model(None, engine="remote") == "org/from-env"
    assert resolve_model("org/explicit") == "org/explicit"
    assert resolve_model(tmp_path) == str(tmp_path)  # a path-like becomes its string


def test_empty_environment_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv(ENV_MODEL, "")
    assert resolve_model(None) == DEFAULT_MODEL


# -- base URL and API key ---------------------------------------------------------------------------
def test_base_urls_explicit_list_commas_and_environment(monkeypatch):
    assert resolve_base_urls(None) == []
    assert resolve_base_urls("http://a:1") == ["http://a:1"]
    assert resolve_base_urls("http://a:1, https://b:2") == ["http://a:1", "https://b:2"]
    assert resolve_base_urls(["http://a:1", "http://b:2,http://c:3"]) == ["http://a:1", "http://b:2", "http://c:3"]
    monkeypatch.setenv(ENV_BASE_URL, "http://env:8000,http://env:8001")
    assert resolve_base_urls(None) == ["http://env:8000", "http://env:8001"]
    assert resolve_base_urls([]) == ["http://env:8000", "http://env:8001"]
    assert resolve_base_urls("http://explicit:1") == ["http://explicit:1"]


@pytest.mark.parametrize("url", ["localhost:8000", "127.0.0.1:8000", "ftp://host", "www.example.com"])
def test_base_url_needs_an_http_scheme(url):
    with pytest.raises(ConfigurationError, match="must start with http:// or https://") as info:
        resolve_base_urls(url)
    assert repr(url) in str(info.value) and "e.g. http://127.0.0.1:8000" in str(info.value)


def test_bad_base_url_from_the_environment_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, "localhost:8000")
    with pytest.raises(ConfigurationError, match=r"from \$QWEN3_RERANK_BASE_URL"):
        engine_kwargs("remote")


def test_api_key_explicit_then_environment(monkeypatch):
    assert resolve_api_key(None) is None
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    assert resolve_api_key(None) == "sk-env"
    assert resolve_api_key("sk-explicit") == "sk-explicit"


# -- engine keyword arguments -----------------------------------------------------------------
def test_local_engine_kwargs_get_the_model(monkeypatch):
    assert engine_kwargs("transformers", dtype="float32") == {"dtype": "float32", "model": DEFAULT_MODEL}
    monkeypatch.setenv(ENV_MODEL, "org/from-env")
    assert engine_kwargs("vllm", enforce_eager=True) == {"enforce_eager": True, "model": "org/from-env"}
    monkeypatch.setenv(ENV_BASE_URL, "http://ignored:1")  # only the remote engine reads it
    assert "base_url" not in engine_kwargs("transformers")


def test_remote_engine_kwargs_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    assert engine_kwargs("remote") == {"base_url": "http://10.0.0.5:8000", "api_key": "sk-env"}
    monkeypatch.setenv(ENV_MODEL, "org/served")
    monkeypatch.setenv(ENV_BASE_URL, "http://a:1,http://b:2")
    assert engine_kwargs("remote", timeout=5) == {
        "timeout": 5,
        "base_url": ["http://a:1", "http://b:2"],
        "api_key": "sk-env",
        "model": "org/served",
    }


def test_remote_engine_without_a_url_names_the_variable():
    with pytest.raises(ConfigurationError, match=r"needs base_url=.*\$QWEN3_RERANK_BASE_URL"):
        engine_kwargs("remote")


@pytest.mark.parametrize("setting", ["base_url", "api_key"])
def test_remote_settings_are_refused_for_local_engines(setting):
    with pytest.raises(ConfigurationError, match=f"{setting} is used by the remote engine only"):
        engine_kwargs("transformers", **{setting: "http://x:1"})


def test_unknown_engine_name():
    with pytest.raises(ConfigurationError, match="unknown engine 'onnx'"):
        validate_engine_options("onnx", {})


# -- option names -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("engine", "typo", "meant"),
    [
        ("transformers", "dtyp", "dtype"),
        ("transformers", "batchsize", "batch_size"),
        ("vllm", "dtyp", "dtype"),
        ("vllm", "enforce_eagr", "enforce_eager"),
        ("vllm", "gpu_mem_utilization", "gpu_memory_utilization"),
        ("remote", "max_retires", "max_retries"),
        ("remote", "timout", "timeout"),
    ],
)
def test_a_typo_names_the_close_match_and_lists_the_options(engine, typo, meant):
    with pytest.raises(ConfigurationError) as info:
        engine_kwargs(engine, base_url="http://x:1" if engine == "remote" else None, **{typo: 1})
    message = str(info.value)
    assert f"the {engine} engine does not accept that option: {typo!r}; did you mean {meant!r}?" in message
    valid = message.split("Valid options: ")[1]
    assert meant in valid and "model" not in valid.split(".")[0].split(", ")


def test_an_unknown_option_without_a_close_match_still_lists_the_options():
    with pytest.raises(ConfigurationError) as info:
        validate_engine_options("transformers", {"frobnicate": 1})
    assert "did you mean" not in str(info.value)
    assert "Valid options: attn_implementation, batch_size, compile, device, dtype" in str(info.value)


def test_dtype_is_not_a_remote_option():
    with pytest.raises(ConfigurationError, match="the remote engine does not accept that option: 'dtype'"):
        validate_engine_options("remote", {"dtype": "float32"})


def test_vllm_passes_other_engine_arguments_on():
    # VLLMEngine forwards names it does not know to vllm.LLM: only near-misses of its own are refused.
    validate_engine_options("vllm", {"quantization": "fp8", "max_num_seqs": 8, "data_parallel_size_local": 1})
    validate_engine_options("vllm", {"pipeline_parallel_size": 2, "hf_overrides": {}, "seed": 0})


@pytest.mark.parametrize("setting", ["model", "base_url", "api_key"])
def test_settings_are_not_engine_options(setting):
    with pytest.raises(ConfigurationError, match=f"{setting} is a setting of its own"):
        validate_engine_options("remote", {setting: "x"})


def test_reranker_options_are_accepted_by_build_reranker_only():
    validate_engine_options("transformers", {"max_length": 512}, also=("max_length",))
    with pytest.raises(ConfigurationError, match="'max_length'"):
        validate_engine_options("transformers", {"max_length": 512})
    with pytest.raises(ConfigurationError, match="did you mean 'max_length'"):
        build_reranker("transformers", max_lenght=512)
    with pytest.raises(ConfigurationError, match="did you mean 'window_overlap'"):
        build_reranker("vllm", window_overlp=8)


@pytest.mark.parametrize(
    ("engine", "options", "fragment"),
    [
        ("transformers", {"dtype": "nonsense"}, "dtype='nonsense': choose float32, bfloat16, float16 or auto"),
        ("vllm", {"dtype": "float64"}, "dtype='float64': choose float32"),
        ("transformers", {"device": "nonsense"}, "device='nonsense': choose cpu, cuda, cuda:N, npu, npu:N or auto"),
        ("transformers", {"device": "cuda:x"}, "device='cuda:x'"),
        ("transformers", {"batch_size": "x"}, "batch_size='x': it must be an integer >= 1"),
        ("transformers", {"batch_size": -1}, "batch_size=-1: it must be an integer >= 1"),
        ("transformers", {"max_batch_tokens": 1.5}, "max_batch_tokens=1.5: it must be an integer >= 1"),
        ("transformers", {"batch_size": True}, "batch_size=True"),
        ("transformers", {"reuse_prefix": "yes"}, "reuse_prefix='yes': choose True, False or 'auto'"),
        ("transformers", {"revision": 3}, "revision=3: it must be a string or None"),
        ("vllm", {"max_model_len": 0}, "max_model_len=0: it must be an integer >= 1"),
        ("vllm", {"tensor_parallel_size": 0}, "tensor_parallel_size=0"),
        ("vllm", {"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5: it must be a fraction"),
        ("vllm", {"enforce_eager": 1}, "enforce_eager=1: it must be true or false"),
        ("remote", {"api": "scores"}, "api='scores': choose 'auto', 'classify', 'score' or 'rerank'"),
        ("remote", {"timeout": 0}, "timeout=0: it must be a number of seconds > 0"),
        ("remote", {"total_timeout": float("nan")}, "total_timeout=nan"),
        ("remote", {"backoff": -1}, "backoff=-1: it must be a number of seconds >= 0"),
        ("remote", {"max_retries": -1}, "max_retries=-1: it must be an integer >= 0"),
        ("remote", {"max_batch_size": "32"}, "max_batch_size='32'"),
    ],
)
def test_option_values_are_checked_before_anything_loads(engine, options, fragment):
    with pytest.raises(ConfigurationError, match="does not accept") as info:
        validate_engine_options(engine, options)
    assert fragment in str(info.value)
    # The factories and the integrations' checks go through the same validation.
    with pytest.raises(ConfigurationError, match="does not accept"):
        reranker_kwargs(engine, base_url="http://127.0.0.1:9" if engine == "remote" else None, **options)


@pytest.mark.parametrize(
    ("engine", "options"),
    [
        ("transformers", {"dtype": "auto", "device": "cpu", "batch_size": 1, "reuse_prefix": "auto", "revision": None}),
        ("transformers", {"dtype": "bfloat16", "device": "cuda:1", "max_batch_tokens": 4096, "reuse_prefix": False}),
        ("transformers", {"dtype": "float16", "device": "npu:0", "attn_implementation": "sdpa"}),
        ("transformers", {"device": "auto"}),
        (
            "vllm",
            {"dtype": "float32", "max_model_len": 2048, "gpu_memory_utilization": 0.3, "data_parallel_size": None},
        ),
        ("vllm", {"enforce_eager": True, "enable_prefix_caching": None, "quantization": "fp8", "seed": 0}),
        ("remote", {"api": "classify", "timeout": 2.5, "connect_timeout": 1, "backoff": 0, "max_retries": 0}),
    ],
)
def test_documented_values_pass(engine, options):
    validate_engine_options(engine, options)


def test_a_torch_dtype_object_is_accepted_by_its_name():
    class FakeDtype:  # what str(torch.bfloat16) gives, without importing torch
        def __str__(self):
            return "torch.bfloat16"

    validate_engine_options("transformers", {"dtype": FakeDtype()})


def test_device_auto_leaves_the_choice_to_the_engine():
    kwargs = engine_kwargs("transformers", model="org/name", device="auto")
    assert "device" not in kwargs
    assert engine_kwargs("transformers", model="org/name", device="cuda:1")["device"] == "cuda:1"


# -- a model given as a path ------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", ["./no-such-checkpoint", "../no/such", "~/no-such-checkpoint-dir", "a/b/c", "{tmp}/missing"]
)
def test_a_model_path_that_does_not_exist_is_named(model, tmp_path):
    model = model.replace("{tmp}", str(tmp_path))
    for engine in ("transformers", "vllm", "remote"):
        with pytest.raises(ConfigurationError, match="no such directory") as info:
            engine_kwargs(engine, model=model, base_url="http://127.0.0.1:9" if engine == "remote" else None)
        assert repr(model) in str(info.value) and "Repo id" not in str(info.value)


def test_a_model_path_that_is_a_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="not a directory"):
        engine_kwargs("transformers", model=path)


def test_a_model_path_from_the_environment_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_MODEL, str(tmp_path / "gone"))
    with pytest.raises(ConfigurationError, match=r"no such directory: .*gone' \(from \$QWEN3_RERANK_MODEL\)"):
        engine_kwargs("vllm")


def test_hub_ids_and_existing_paths_pass_and_tilde_is_expanded(monkeypatch, tmp_path):
    assert engine_kwargs("transformers", model="Qwen/Qwen3-Reranker-0.6B")["model"] == "Qwen/Qwen3-Reranker-0.6B"
    assert engine_kwargs("transformers", model="org-only-name")["model"] == "org-only-name"
    assert engine_kwargs("transformers", model=tmp_path)["model"] == str(tmp_path)
    (tmp_path / "ckpt").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert engine_kwargs("transformers", model="~/ckpt")["model"] == str(tmp_path / "ckpt")


def test_reranker_kwargs_checks_everything_and_builds_nothing(monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    assert reranker_kwargs("remote", max_length=300, timeout=5) == {
        "max_length": 300,
        "timeout": 5,
        "base_url": "http://10.0.0.5:8000",
    }
    monkeypatch.delenv(ENV_BASE_URL)
    with pytest.raises(ConfigurationError, match="needs base_url"):
        reranker_kwargs("remote", max_length=300)


def test_validation_loads_no_model_and_no_backend():
    code = (
        "import json, sys\nimport qwen3_rerank\n"
        "from qwen3_rerank import settings\n"
        "settings.validate_engine_options('transformers', {'dtype': 'float32', 'device': 'cpu'})\n"
        "settings.validate_engine_options('vllm', {'gpu_memory_utilization': 0.3, 'quantization': 'fp8'})\n"
        "settings.validate_engine_options('remote', {'timeout': 5})\n"
        "settings.engine_kwargs('transformers', model='no-such-org/no-such-model', dtype='float32')\n"
        "settings.engine_kwargs('vllm', model='no-such-org/no-such-model', enforce_eager=True)\n"
        "settings.engine_kwargs('remote', base_url='http://127.0.0.1:9')\n"
        "settings.reranker_kwargs('vllm', model='no-such-org/no-such-model', max_length=512, enforce_eager=True)\n"
        "for name, typo in (('transformers', 'dtyp'), ('vllm', 'dtyp'), ('remote', 'timout')):\n"
        "    try:\n"
        "        settings.validate_engine_options(name, {typo: 1})\n"
        "    except qwen3_rerank.ConfigurationError:\n"
        "        pass\n"
        "heavy = ('torch', 'vllm', 'transformers', 'httpx', 'tokenizers', 'huggingface_hub')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# -- building -----------------------------------------------------------------------------------
def test_build_engine_remote_from_the_environment_contacts_nothing(monkeypatch):
    httpx = pytest.importorskip("httpx")
    requests = []

    def handler(request):
        requests.append(request)
        return httpx.Response(500)

    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000/v1")
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    monkeypatch.setenv(ENV_MODEL, "org/served")
    engine = build_engine("remote", transport=httpx.MockTransport(handler), max_model_len=512)
    try:
        assert engine.base_urls == ("http://10.0.0.5:8000",)
        assert engine.model == "org/served"
        assert engine._requester.headers().get("Authorization") == "Bearer sk-env"
        assert "sk-env" not in repr(engine)
    finally:
        engine.close()
    assert requests == []


def test_build_reranker_owns_its_engine_and_splits_the_options(monkeypatch):
    httpx = pytest.importorskip("httpx")
    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    reranker = build_reranker(
        "remote",
        max_length=300,
        window_overlap=8,
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
        max_model_len=512,
    )
    assert reranker.max_length == 300 and reranker.window_overlap == 8
    assert reranker.engine.base_urls == ("http://10.0.0.5:8000",)
    closed = []
    monkeypatch.setattr(reranker.engine, "close", lambda: closed.append(True))
    reranker.close()
    assert closed == [True]


def test_build_engine_transformers_uses_the_model_from_the_environment(monkeypatch, tiny_model):
    monkeypatch.setenv(ENV_MODEL, str(tiny_model))
    engine = build_engine("transformers", device="cpu", dtype="float32")
    try:
        assert engine.model_name == str(tiny_model)
    finally:
        engine.close()


def test_result_metadata_is_what_the_integrations_add_to_a_document():
    windowed = RerankResult(index=0, document="d", score=0.9, logit=2.2, truncated=True, window=2, num_windows=3)
    assert result_metadata(windowed) == {"rerank_logit": 2.2, "rerank_truncated": True}
    assert result_metadata(windowed, windows=True) == {
        "rerank_logit": 2.2,
        "rerank_truncated": True,
        "rerank_window": 2,
        "rerank_num_windows": 3,
    }
    fits = RerankResult(index=1, document="e", score=0.5, logit=0.0)
    assert result_metadata(fits, windows=True) == {
        "rerank_logit": 0.0,
        "rerank_truncated": False,
        "rerank_window": None,
        "rerank_num_windows": 1,
    }
    # A new dict each time: an integration adds its own keys to it (LlamaIndex's retrieval_score).
    assert result_metadata(fits) is not result_metadata(fits)
