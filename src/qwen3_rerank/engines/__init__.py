"""Engines behind :class:`qwen3_rerank.Reranker`, imported only when asked for.

:func:`create_engine` is the one way from settings to an engine (``Reranker("name")``, the CLI,
the integrations, the server and the batch job all use it); it imports just the chosen engine's
module, and importing :mod:`qwen3_rerank.engines` imports none of them. The classes are also
reachable as attributes (``qwen3_rerank.engines.VLLMEngine``), which import on first access.

Adding an engine: write its module (an :class:`Engine` subclass that states its facts as class
attributes), add one entry to :data:`ENGINES` (in ``_catalog.py``), and its extra to
``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import Engine
from ._catalog import ENGINES, engine_class
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

_BY_CLASS = {cls: (mod, cls) for mod, cls in ENGINES.values()}


def __getattr__(attr: str) -> Any:
    if attr in _BY_CLASS:
        module, cls = _BY_CLASS[attr]
        return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
