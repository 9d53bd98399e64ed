"""The registry of engines: name -> module and class, imported only when asked for."""

from __future__ import annotations

import importlib

from .._exceptions import ConfigurationError
from ._base import Engine

__all__ = ["ENGINES", "engine_class"]

ENGINES: dict[str, tuple[str, str]] = {
    "transformers": ("qwen3_rerank.engines.transformers_engine", "TransformersEngine"),
    "vllm": ("qwen3_rerank.engines.vllm_engine", "VLLMEngine"),
    "remote": ("qwen3_rerank.engines.remote", "RemoteEngine"),
}
"""Engine name -> (module, class): the registry. Names are what ``Reranker(engine=...)`` accepts."""


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
