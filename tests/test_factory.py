"""The one corridor from settings to an engine: every path behaves the same (issue 23).

Each test here failed before ``qwen3_rerank.engines.create_engine`` became the only factory:
``Reranker("name")`` built engines past the defaults, the environment and the option check that
the CLI and the integrations applied, and ``top_n=None`` in a call meant "the reranker's default".
"""

from __future__ import annotations

import pickle

import pytest

from qwen3_rerank import ConfigurationError, Reranker, engines, settings
from qwen3_rerank._config import DEFAULT_MODEL, ENV_BASE_URL, ENV_MODEL
from qwen3_rerank._defaults import USE_DEFAULT
from tests.fakes import FakeEngine


def test_reranker_by_name_falls_back_to_the_default_model(monkeypatch, tiny_model):
    # Before: TypeError (TransformersEngine.__init__() missing 'model'), where the CLI used the default.
    monkeypatch.setenv(ENV_MODEL, str(tiny_model))
    with Reranker("transformers", device="cpu", dtype="float32") as reranker:
        assert reranker.engine.model_name == str(tiny_model)
        assert len(reranker.rerank("q", ["a", "b"])) == 2
    monkeypatch.delenv(ENV_MODEL)
    assert engines.engine_options("transformers")["model"] == DEFAULT_MODEL


def test_reranker_remote_honours_the_base_url_variable(monkeypatch, tiny_model):
    # Before: ConfigurationError "RemoteEngine needs base_url=" although the variable was set.
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1, http://127.0.0.1:10")
    with Reranker("remote", model=str(tiny_model)) as reranker:  # contacts nothing
        assert reranker.engine.base_urls == ("http://127.0.0.1:9", "http://127.0.0.1:10")


def test_reranker_by_name_answers_a_typo_with_did_you_mean():
    # Before: a raw TypeError from the engine's constructor.
    with pytest.raises(ConfigurationError, match="did you mean 'dtype'"):
        Reranker("transformers", dtyp="float32")
    with pytest.raises(ConfigurationError, match="unknown engine 'onnx'"):
        Reranker("onnx")


def test_top_n_none_in_a_call_means_all(tiny_tokenizer):
    # Before: None fell back to the reranker's top_n (2 results), against the docstring.
    reranker = Reranker(FakeEngine(tiny_tokenizer, scores=[0.1, 0.9, 0.5]), top_n=2)
    docs = ["a", "b", "c"]
    assert len(reranker.rerank("q", docs)) == 2
    assert len(reranker.rerank("q", docs, top_n=USE_DEFAULT)) == 2
    assert [r.index for r in reranker.rerank("q", docs, top_n=None)] == [1, 2, 0]
    assert [r.index for r in reranker.rerank_many(["q"], [docs], top_n=None)[0]] == [1, 2, 0]


def test_use_default_is_one_object_through_copy_and_pickle():
    import copy

    assert copy.deepcopy(USE_DEFAULT) is USE_DEFAULT
    assert pickle.loads(pickle.dumps(USE_DEFAULT)) is USE_DEFAULT
    assert repr(USE_DEFAULT) == "USE_DEFAULT" and settings.USE_DEFAULT is USE_DEFAULT


def test_engine_facts_are_class_attributes_and_extras_exist():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name in engines.ENGINES:
        cls = engines.engine_class(name)
        assert cls.name == name
        assert cls.extra in extras, (name, cls.extra)
        assert cls.packages, name
    assert [n for n in engines.ENGINES if engines.engine_class(n).uses_server] == ["remote"]
    assert [n for n in engines.ENGINES if engines.engine_class(n).uses_device] == ["transformers"]
    assert tuple(engines.ENGINES) == settings.ENGINE_NAMES


def test_base_url_messages_never_show_credentials():
    # Issue 25 item 15: a bad scheme, a comma inside a query token, a token as the user name.
    with pytest.raises(ConfigurationError) as info:
        settings.resolve_base_urls("ftp://me:s3cret-pw@gw:80")
    assert "s3cret-pw" not in str(info.value) and "me:***@gw" in str(info.value)
    assert settings.resolve_base_urls("http://gw/?token=ab,cd, https://gw2") == [
        "http://gw/?token=ab,cd",
        "https://gw2",
    ]
    # Before: split into 'http://gw/?token=ab' and 'cd,ef-secret', refused with that part shown.
    assert settings.resolve_base_urls("http://gw/?token=ab,cd,ef-secret") == ["http://gw/?token=ab,cd,ef-secret"]
    assert settings.redact_url("https://sk-live-123@gw/v1") == "https://***@gw/v1"
    assert settings.resolve_base_urls("HTTP://gw:8000") == ["http://gw:8000"]


# -- the pairs API (issue 25 item 26) ------------------------------------------------------------
def test_score_pairs_in_input_order_in_one_engine_call(tiny_tokenizer):
    def by_doc(ids):
        text = tiny_tokenizer.decode(ids)
        return 0.9 if "good" in text else 0.2 if "bad" in text else 0.5

    engine = FakeEngine(tiny_tokenizer, by_doc)
    reranker = Reranker(engine, top_n=1)  # the reranker's top_n does not cut pairs
    pairs = [("q1", "bad"), ("q2", "good"), ("q1", "good"), ("q2", "meh"), ("q1", "bad")]
    scores = reranker.score_pairs(pairs)
    assert scores == pytest.approx([0.2, 0.9, 0.9, 0.5, 0.2])
    assert engine.calls == ["score"]
    assert reranker.score_pairs([]) == [] and engine.calls == ["score"]
    direct = {r.index: r.score for r in reranker.rerank("q1", ["bad", "good", "bad"], top_n=None)}
    assert [scores[0], scores[2], scores[4]] == [direct[0], direct[1], direct[2]]


async def test_ascore_pairs_uses_the_async_path(tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer, scores=[0.3, 0.7])
    scores = await Reranker(engine).ascore_pairs([("q", "a"), ("q", "b")])
    assert scores == pytest.approx([0.3, 0.7]) and engine.calls == ["ascore"]


@pytest.mark.parametrize("bad", ["qd", [("q",)], [("q", 1)], [["q", "d", "e"]], None])
def test_score_pairs_refuses_what_is_not_pairs(tiny_tokenizer, bad):
    with pytest.raises(TypeError, match="pair"):
        Reranker(FakeEngine(tiny_tokenizer)).score_pairs(bad)


# -- progress by pairs in the Python API (issue 25 item 24) ---------------------------------------
async def test_show_progress_bar_draws_by_pairs_and_keeps_the_scores(tiny_tokenizer, capsys):
    docs = [f"document number {i}" for i in range(1100)]  # more than one run of 1,024
    engine = FakeEngine(tiny_tokenizer)
    quiet = Reranker(engine).rerank("q", docs)
    assert engine.calls == ["score"] and capsys.readouterr().err == ""  # off by default: one call, no output
    loud = Reranker(engine, show_progress_bar=True).rerank("q", docs)
    err = capsys.readouterr().err
    assert "reranking" in err and "1100/1100" in err and "pairs" in err
    assert engine.calls == ["score", "score", "score"]  # 1,024 + 76
    assert [(r.index, r.score) for r in loud] == [(r.index, r.score) for r in quiet]
    many = await Reranker(engine).arerank_many(["q"], [docs], show_progress_bar=True)
    assert "1100/1100" in capsys.readouterr().err and engine.calls[-2:] == ["ascore", "ascore"]
    assert [(r.index, r.score) for r in many[0]] == [(r.index, r.score) for r in quiet]
    assert Reranker(engine).score_pairs([("q", d) for d in docs], show_progress_bar=True)
    assert "1100/1100" in capsys.readouterr().err
