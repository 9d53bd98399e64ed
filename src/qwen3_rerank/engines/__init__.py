"""Engines behind :class:`qwen3_rerank.Reranker`, imported only when asked for.

:func:`create_engine` is the one way from settings to an engine (``Reranker("name")``, the CLI,
the integrations, the server and the batch job all use it); it imports just the chosen engine's
module, and importing :mod:`qwen3_rerank.engines` imports none of them. The classes are also
reachable as attributes (``qwen3_rerank.engines.VLLMEngine``), which import on first access.

Adding an engine: write its module (an :class:`Engine` subclass that states its facts as class
attributes), add one entry to :data:`ENGINES`, and its extra to ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._exceptions import ConfigurationError
from ._base import Engine
from ._factory import DTYPES, check_options, create_engine, engine_options

__all__ = [
    "DTYPES",
    "ENGINES",
    "Engine",
    "RemoteEngine",
    "TransformersEngine",
    "VLLMEngine",
    "check_options",
    "create_engine",
    "engine_class",
    "engine_options",
]

ENGINES: dict[str, tuple[str, str]] = {
    "transformers": ("qwen3_rerank.engines.transformers_engine", "TransformersEngine"),
    "vllm": ("qwen3_rerank.engines.vllm_engine", "VLLMEngine"),
    "remote": ("qwen3_rerank.engines.remote", "RemoteEngine"),
}
"""Engine name -> (module, class): the registry. Names are what ``Reranker(engine=...)`` accepts."""

_BY_CLASS = {cls: (mod, cls) for mod, cls in ENGINES.values()}


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name, importing only its module (no torch, vLLM or httpx).

    Raises:
        ConfigurationError: an unknown name (the message lists the known ones).
    """
    try:
        module, cls = ENGINES[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown engine {name!r}; choose one of {', '.join(map(repr, ENGINES))} or pass an Engine instance"
        ) from None
    found: type[Engine] = getattr(importlib.import_module(module), cls)
    return found


def __getattr__(attr: str) -> Any:
    if attr in _BY_CLASS:
        module, cls = _BY_CLASS[attr]
        return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
