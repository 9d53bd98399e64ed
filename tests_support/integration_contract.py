"""The settings contract every integration keeps, written once (issue 23 item 5, issue 25 items 3, 8, 28).

An integration's test module imports these tests and defines an ``integration`` fixture returning
an :class:`Integration` that says how to drive it. What is checked: settings validated when the
object is configured (typos, a missing or scheme-less base URL, ``reranker=`` beside engine
settings, keywords carried over from other rerankers), the API key and any credentials in the
base URL never in an error, a repr or a serialisation, and copies and pickles that rebuild their
own engine on first use.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from qwen3_rerank import Reranker
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

__all__ = [
    "Integration",
    "clean_env",
    "test_api_key_never_in_errors_reprs_or_serialisations",
    "test_base_url_credentials_never_shown_or_serialised",
    "test_copies_and_pickles_rebuild_their_own_engine",
    "test_engine_settings_are_checked_when_configured",
    "test_injected_reranker_excludes_settings_and_is_not_pickled",
    "test_keywords_from_other_rerankers_say_where_they_go",
    "test_remote_settings_come_from_the_environment",
]

SECRET = "sk-contract-7f3a9c"
PASSWORD = "pw-contract-19d2"


@dataclass
class Integration:
    """How the contract drives one integration."""

    cls: type
    """The class (pydantic): ``cls(**fields)``; ``cls(reranker=...)`` injects a Reranker."""
    rank: Callable[[Any, list[str], str], list[int]]
    """Rerank texts for a query through the object; the returned indices, best first."""
    serialised: Callable[[Any], list[str]]
    """Every serialised form of the object (model_dump, JSON, the framework's own dumps)."""
    reranker_of: Callable[[Any], Reranker]
    """The Reranker the object uses (built on first use)."""
    built: Callable[[Any], Reranker | None]
    """The Reranker the object holds now, without building one."""


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (ENV_MODEL, ENV_BASE_URL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def _every_text(integration: Integration, obj: Any) -> str:
    return "\n".join([repr(obj), str(obj), *integration.serialised(obj)])


def test_engine_settings_are_checked_when_configured(integration: Integration, clean_env: None) -> None:
    cls = integration.cls
    for kwargs, message in (
        ({"engine_options": {"dtyp": "float32"}}, "did you mean 'dtype'"),
        ({"engine": "vllm", "engine_options": {"enforce_eagr": True}}, "did you mean 'enforce_eager'"),
        ({"engine": "remote", "base_url": "http://127.0.0.1:1", "engine_options": {"max_retires": 0}}, "max_retries"),
        ({"engine": "remote", "base_url": "localhost:8000"}, "http://"),
        ({"engine": "remote"}, "needs base_url"),
        ({"base_url": "http://127.0.0.1:1"}, "engine='remote'"),
        ({"engine": "onnx"}, "unknown engine 'onnx'"),
        ({"top_n": 0}, "use None for all"),
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            cls(**kwargs)


def test_keywords_from_other_rerankers_say_where_they_go(integration: Integration) -> None:
    for kwargs, message in (
        ({"device": "cuda"}, r"engine_options=\{'device': \.\.\.\}"),
        ({"dtype": "bfloat16"}, r"engine_options=\{'dtype'"),
        ({"trust_remote_code": True}, "runs no remote code"),
        ({"cohere_api_key": "x"}, "pass api_key="),
        ({"top_k": 3}, "top_n="),
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            integration.cls(**kwargs)


def test_remote_settings_come_from_the_environment(
    integration: Integration, clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny_model: Any
) -> None:
    monkeypatch.setenv(ENV_BASE_URL, "http://10.0.0.5:8000")
    monkeypatch.setenv(ENV_API_KEY, SECRET)
    obj = integration.cls(engine="remote", model=str(tiny_model))
    reranker = integration.reranker_of(obj)  # builds the engine; contacts nothing
    try:
        assert reranker.engine.base_urls == ("http://10.0.0.5:8000",)
        assert SECRET not in _every_text(integration, obj) and SECRET not in repr(reranker)
    finally:
        obj.close()


def test_api_key_never_in_errors_reprs_or_serialisations(
    integration: Integration, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: pydantic's ValidationError showed its input, the key in clear (LangChain with api_key=
    # as the last keyword; LlamaIndex with the key from the environment).
    for env in (False, True):
        if env:
            monkeypatch.setenv(ENV_API_KEY, SECRET)
        kwargs: dict[str, Any] = {"engine": "remote", "base_url": "http://127.0.0.1:1", "top_n": 0}
        if not env:
            kwargs["api_key"] = SECRET  # the last keyword
        with pytest.raises((ValueError, TypeError)) as info:
            integration.cls(**kwargs)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    obj = integration.cls(engine="remote", base_url="http://127.0.0.1:1", api_key=SECRET)
    assert SECRET not in _every_text(integration, obj)


def test_base_url_credentials_never_shown_or_serialised(integration: Integration, clean_env: None) -> None:
    # Before: the password showed in clear in repr, model_dump and the framework's serialisations.
    for url in (f"http://me:{PASSWORD}@gw:8000", f"https://{PASSWORD}@gw", f"http://gw/?token={PASSWORD}"):
        obj = integration.cls(engine="remote", base_url=url)
        text = _every_text(integration, obj)
        assert PASSWORD not in text, text
        assert "gw" in text  # the host is still shown
        assert obj.base_url == url  # the object itself keeps what it was given


def test_copies_and_pickles_rebuild_their_own_engine(integration: Integration, tiny_model: Any) -> None:
    # Before: LangChain's compressor could not be pickled or deep-copied ('_thread.lock'); LlamaIndex
    # warned "Removing unpickleable attribute" while pickling.
    obj = integration.cls(model=str(tiny_model), engine_options={"device": "cpu", "dtype": "float32"}, top_n=2)
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    expected = integration.rank(obj, texts, "alpha")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            clones = [copy.deepcopy(obj), copy.copy(obj), pickle.loads(pickle.dumps(obj))]
        for clone in clones:
            assert integration.built(clone) is None or integration.built(clone) is integration.built(obj)
            try:
                assert integration.rank(clone, texts, "alpha") == expected
            finally:
                if integration.built(clone) is not integration.built(obj):
                    clone.close()
    finally:
        obj.close()


def test_injected_reranker_excludes_settings_and_is_not_pickled(integration: Integration, fake_reranker: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="either reranker= or engine settings"):
        integration.cls(reranker=fake_reranker, model="x")
    obj = integration.cls(reranker=fake_reranker)
    assert integration.reranker_of(obj) is fake_reranker
    assert integration.reranker_of(copy.deepcopy(obj)) is fake_reranker  # shared, like a client
    with pytest.raises(TypeError, match="not data"):
        pickle.dumps(obj)
    obj.close()
    assert not fake_reranker._closed  # an injected reranker is left open
