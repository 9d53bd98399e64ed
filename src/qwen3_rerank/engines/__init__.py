"""Engines behind :class:`qwen3_rerank.Reranker`, imported only when asked for.

``create_engine("transformers" | "vllm" | "remote", **options)`` imports just the chosen engine's
module; importing :mod:`qwen3_rerank.engines` imports none of them. The classes are also reachable
as attributes (``qwen3_rerank.engines.VLLMEngine``), which import on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._exceptions import ConfigurationError
from ._base import Engine

__all__ = ["ENGINES", "Engine", "RemoteEngine", "TransformersEngine", "VLLMEngine", "create_engine"]

ENGINES: dict[str, tuple[str, str]] = {
    "transformers": ("qwen3_rerank.engines.transformers_engine", "TransformersEngine"),
    "vllm": ("qwen3_rerank.engines.vllm_engine", "VLLMEngine"),
    "remote": ("qwen3_rerank.engines.remote", "RemoteEngine"),
}
"""Engine name -> (module, class). Names are what ``Reranker(engine=...)`` accepts."""

_BY_CLASS = {cls: (mod, cls) for mod, cls in ENGINES.values()}


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name, importing only its module."""
    try:
        module, cls = ENGINES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown engine {name!r}; choose one of {sorted(ENGINES)} or pass an Engine instance"
        ) from None
    found: type[Engine] = getattr(importlib.import_module(module), cls)
    return found


def create_engine(name: str, **options: Any) -> Engine:
    """Create an engine by name with its keyword options (e.g. ``model=...``)."""
    return engine_class(name)(**options)


def __getattr__(attr: str) -> Any:
    if attr in _BY_CLASS:
        module, cls = _BY_CLASS[attr]
        return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
