"""The public surface is small and pinned; install hints name extras that exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import qwen3_rerank

ROOT = Path(__file__).resolve().parents[1]


def test_exported_members_are_pinned():
    assert qwen3_rerank.__all__ == sorted(qwen3_rerank.__all__, key=lambda n: (n.startswith("_"), n))
    assert set(qwen3_rerank.__all__) == {
        "AuthenticationError", "ConfigurationError", "EncodedPair", "EngineError", "EngineOutput",
        "InvalidScoreError", "MissingDependencyError", "PairEncoder", "Qwen3RerankError", "Qwen3Tokenizer",
        "Ranking", "RemoteError", "RemoteTimeoutError", "RerankPlan", "RerankResult", "RerankStats", "Reranker",
        "TemplateMismatchError", "Tokenizer", "USE_DEFAULT", "__version__",
    }  # fmt: skip
    for name in qwen3_rerank.__all__:
        assert hasattr(qwen3_rerank, name)


def test_every_install_hint_names_a_real_extra():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    hinted = set()
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        hinted |= set(re.findall(r"\"([a-z]+)\",\s*exc\)", text))
        hinted |= set(re.findall(r"qwen3-rerank\[([a-z]+)\]", text))
    assert hinted and hinted <= extras, hinted - extras


def test_version_matches_package_metadata():
    from importlib.metadata import version

    assert version("qwen3-rerank") == qwen3_rerank.__version__
