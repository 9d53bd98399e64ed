"""The Ascend NPU code paths, on a simulated Ascend stack (tests/fake_ascend.py).

Real torch on the CPU computes everything; only torch_npu (``torch.npu``, the ``"npu"`` device
type) and vLLM-Ascend's vLLM (``current_platform``, the ``ascend`` plugin, ``AsyncLLM``) are fakes.
"""

from __future__ import annotations

import json
import sys

import pytest

from qwen3_rerank import ConfigurationError, MissingDependencyError, Reranker
from qwen3_rerank.testing import reference_scores
from tests.fake_ascend import (
    TORCH_NPU_VERSION,
    VLLM_ASCEND_VERSION,
    VLLM_VERSION,
    hide_cuda,
    install_torch_npu,
    install_vllm_ascend,
)

DOCS = ["Paris is the capital of France.", "short", "The Eiffel Tower is in Paris. " * 5]


def _block_torch_npu(monkeypatch):
    """Make ``import torch_npu`` fail, as where it is not installed (and if it ever is)."""
    monkeypatch.setitem(sys.modules, "torch_npu", None)


@pytest.fixture
def npu(monkeypatch, tmp_path):
    return install_torch_npu(monkeypatch, tmp_path, ["Ascend910B3", "Ascend910B3"])


# -- the fakes themselves ------------------------------------------------------------------------
def test_the_fakes_act_only_after_import_and_leave_nothing_behind(tmp_path):
    import torch

    module_to, tensor_to = torch.nn.Module.__dict__["to"], torch.Tensor.__dict__.get("to")
    real_vllm = sys.modules.get("vllm")
    mp = pytest.MonkeyPatch()
    try:
        fake = install_torch_npu(mp, tmp_path)
        install_vllm_ascend(mp, tmp_path)
        assert not hasattr(torch, "npu")  # torch.npu exists only after `import torch_npu`
        with pytest.raises(RuntimeError, match="npu"):
            torch.zeros(1).to("npu")
        import torch_npu  # noqa: F401

        assert fake.imports == 1 and torch.npu.device_count() == 1
        assert torch.zeros(1).to("npu").device.type == "cpu" and fake.moves == ["npu"]
        from vllm.platforms import current_platform

        assert current_platform.device_type == "npu"
    finally:
        mp.undo()
    assert not hasattr(torch, "npu") and "torch_npu" not in sys.modules
    assert torch.nn.Module.__dict__["to"] is module_to and torch.Tensor.__dict__.get("to") is tensor_to
    assert sys.modules.get("vllm") is real_vllm
    with pytest.raises(RuntimeError, match="npu"):
        torch.zeros(1).to("npu")


# -- device selection ----------------------------------------------------------------------------
def test_auto_device_picks_the_npu_after_importing_torch_npu(npu):
    from qwen3_rerank._devices import auto_device, auto_dtype, npu_available

    assert npu_available() is True and npu.imports == 1
    assert auto_device() == "npu"  # an Ascend host has no CUDA, so the NPU is next
    assert str(auto_dtype("npu")) == "torch.bfloat16"


def test_auto_device_falls_back_to_the_cpu(monkeypatch, tmp_path):
    from qwen3_rerank._devices import auto_device, npu_available

    install_torch_npu(monkeypatch, tmp_path, names=[])  # torch_npu installed, no NPU visible
    assert npu_available() is False and auto_device() == "cpu"
    monkeypatch.undo()
    _block_torch_npu(monkeypatch)
    hide_cuda(monkeypatch)  # a CPU-only host, also on the GPU test tier's machine
    assert npu_available() is False and auto_device() == "cpu"


# -- the embedded engine -------------------------------------------------------------------------
def test_embedded_engine_runs_on_the_npu_it_picks(npu, tiny_model):
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model, dtype="float32")  # device: auto
    assert engine.device == "npu" and npu.imports == 1
    assert "npu" in npu.moves  # the weights went to the NPU, after torch_npu was imported
    reranker = Reranker(engine)
    pairs = reranker.plan(["what is the capital of France?"], [DOCS]).pairs
    got = engine.score(pairs).scores
    assert got == pytest.approx(reference_scores(tiny_model, [p.input_ids for p in pairs]), abs=1e-5)
    engine.close()
    assert npu.npu.emptied == 1  # the NPU's cached memory is handed back, as CUDA's is


def test_embedded_engine_defaults_to_bfloat16_on_an_explicit_npu(npu, tiny_model):
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model, device="npu:1")
    try:
        assert engine.device == "npu:1" and engine.dtype == "bfloat16" and "npu:1" in npu.moves
    finally:
        engine.close()


def test_npu_without_torch_npu_is_a_missing_dependency(monkeypatch, tiny_model):
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    _block_torch_npu(monkeypatch)
    with pytest.raises(MissingDependencyError, match=r"torch_npu .*vLLM-Ascend image"):
        TransformersEngine(tiny_model, device="npu")


@pytest.mark.parametrize(
    ("names", "device", "message"),
    [([], "npu", r"sees no NPU .*ASCEND_RT_VISIBLE_DEVICES"), (["Ascend910B3"], "npu:1", r"sees 1 NPU\(s\)")],
    ids=["no-npu", "no-such-npu"],
)
def test_an_npu_that_is_not_there_is_refused_before_loading(monkeypatch, tmp_path, tiny_model, names, device, message):
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    fake = install_torch_npu(monkeypatch, tmp_path, names)
    with pytest.raises(ConfigurationError, match=message):
        TransformersEngine(tiny_model, device=device)
    assert fake.moves == []


def test_the_reference_imports_torch_npu_too(npu, tiny_model):
    from qwen3_rerank.diagnosis.reference import build_reference

    engine, label = build_reference(str(tiny_model), device="npu")
    assert "npu" in label and npu.imports == 1 and "npu" in npu.moves
    ids = Reranker(engine).plan(["q"], [DOCS]).pairs
    assert engine.score(ids).scores == pytest.approx(reference_scores(tiny_model, [p.input_ids for p in ids]), abs=1e-6)
    engine.close()


# -- in-process vLLM on vLLM-Ascend ----------------------------------------------------------------
def test_vllm_engine_on_ascend_turns_prefix_caching_off(monkeypatch, tmp_path, tiny_model):
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    llms = install_vllm_ascend(monkeypatch, tmp_path)
    engine = VLLMEngine(tiny_model)
    try:
        (llm,) = llms.started
        args = llm.engine_args
        assert args.enable_prefix_caching is False
        assert args.runner == "pooling" and args.hf_overrides["is_original_qwen3_reranker"] is True
        assert args.gpu_memory_utilization == 0.9  # vLLM's default on accelerators (none passed)
        pairs = Reranker(engine).plan(["q"], [DOCS]).pairs
        assert engine.score(pairs).logits == pytest.approx([len(p.input_ids) / 100 for p in pairs])
    finally:
        engine.close()
    assert llm.closed

    on = VLLMEngine(tiny_model, enable_prefix_caching=True)  # the caller's choice wins
    try:
        assert llms.started[-1].engine_args.enable_prefix_caching is True
    finally:
        on.close()


# -- qwen3-rerank info ---------------------------------------------------------------------------
def test_info_reports_the_npus_and_the_vllm_ascend_platform(npu, monkeypatch, tmp_path, capsys):
    from qwen3_rerank.cli import main

    install_vllm_ascend(monkeypatch, tmp_path)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["devices"]["npu"] == {"available": True, "count": 2, "names": ["Ascend910B3", "Ascend910B3"]}
    assert info["vllm_platform"] == {
        "installed": True,
        "plugins": ["ascend"],
        "plugin": "ascend",
        "platform": "NPUPlatform",
        "module": "vllm_ascend.platform",
        "device_type": "npu",
        "device_name": "npu",
    }
    assert info["versions"]["torch-npu"] == TORCH_NPU_VERSION
    assert info["versions"]["vllm-ascend"] == VLLM_ASCEND_VERSION and info["versions"]["vllm"] == VLLM_VERSION
    assert info["engines"]["vllm"]["available"] is True

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "npu            2 x Ascend910B3, Ascend910B3" in out
    assert "NPUPlatform (device_type=npu, device_name=npu), plugin 'ascend' (vllm_ascend.platform)" in out


def test_info_says_why_there_is_no_npu(monkeypatch, tmp_path, capsys):
    from qwen3_rerank.cli import main

    install_torch_npu(monkeypatch, tmp_path, names=[])
    assert main(["info"]) == 0
    assert "npu            no (not available)" in capsys.readouterr().out
    monkeypatch.undo()
    _block_torch_npu(monkeypatch)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["devices"]["npu"] == {
        "available": False,
        "note": "torch_npu is not installed",
    }
