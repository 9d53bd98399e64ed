"""Settings shared by the command line, the integrations, the server and the batch job.

A thin public face over the ground floor (:mod:`qwen3_rerank._config`: the default model and the
environment variables) and the one factory (:func:`qwen3_rerank.engines.create_engine`), plus the
step from settings to a :class:`~qwen3_rerank.Reranker` (:func:`reranker_kwargs`,
:func:`build_reranker`), where the Reranker's own options travel with the engine's:

* :data:`ENV_MODEL` (``QWEN3_RERANK_MODEL``): the model when none is given;
* :data:`ENV_BASE_URL` (``QWEN3_RERANK_BASE_URL``): the server(s) of the remote engine, commas
  between replicas;
* :data:`ENV_API_KEY` (``QWEN3_RERANK_API_KEY``): the remote engine's bearer token.

Checking costs nothing: no model is loaded and no connection opened, so a typo such as ``dtyp=``
fails when a pipeline is configured, not minutes later when the model loads.

Example:
    >>> from qwen3_rerank.settings import engine_kwargs
    >>> engine_kwargs("transformers", dtype="float32")  # with $QWEN3_RERANK_MODEL unset
    {'dtype': 'float32', 'model': 'Qwen/Qwen3-Reranker-0.6B'}
    >>> engine_kwargs("transformers", dtyp="float32")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ConfigurationError: the transformers engine does not accept that option: 'dtyp'; did you mean 'dtype'? ...
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import engines
from ._config import (
    DEFAULT_MODEL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    redact_url,
    resolve_api_key,
    resolve_base_urls,
)
from ._config import resolve_model as _resolve_model
from ._reranker import USE_DEFAULT, Reranker, check_top_n
from .engines import DTYPES

if TYPE_CHECKING:
    from .engines import Engine

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "ENGINE_NAMES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "USE_DEFAULT",
    "build_engine",
    "build_reranker",
    "check_top_n",
    "engine_kwargs",
    "redact_url",
    "reranker_kwargs",
    "resolve_api_key",
    "resolve_base_urls",
    "resolve_model",
    "validate_engine_options",
]

ENGINE_NAMES = tuple(engines.ENGINES)
"""The engine names the factory accepts (``Reranker(engine=...)`` accepts the same)."""


def resolve_model(model: str | os.PathLike[str] | None = None, *, engine: str = "transformers") -> str | None:
    """The model ``engine`` would use: ``model``, else ``$QWEN3_RERANK_MODEL``, else
    :data:`DEFAULT_MODEL`; ``None`` for an engine that asks its server (the remote engine)."""
    return _resolve_model(model, default=None if engines.engine_class(engine).uses_server else DEFAULT_MODEL)


def validate_engine_options(engine: str, options: Mapping[str, Any], *, also: Iterable[str] = ()) -> None:
    """Refuse options that ``engine``'s constructor does not take, or values it would refuse.

    See :func:`qwen3_rerank.engines.check_options`.
    """
    engines.check_options(engine, options, also=also)


def engine_kwargs(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The complete, checked keyword arguments of ``engine``'s constructor; nothing is loaded.

    See :func:`qwen3_rerank.engines.engine_options`.
    """
    return engines.engine_options(engine, model=model, base_url=base_url, api_key=api_key, **options)


def build_engine(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Engine:
    """Create ``engine`` from settings (:func:`qwen3_rerank.engines.create_engine`).

    Example:
        >>> from qwen3_rerank.settings import build_engine
        >>> engine = build_engine("remote", base_url="http://127.0.0.1:8000")  # doctest: +SKIP
    """
    return engines.create_engine(engine, model=model, base_url=base_url, api_key=api_key, **options)


def _reranker_options() -> tuple[str, ...]:
    params = inspect.signature(Reranker).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "model")


def reranker_kwargs(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The checked keyword arguments of ``Reranker(engine, **kwargs)``; nothing is built.

    ``options`` may mix the :class:`~qwen3_rerank.Reranker`'s own (``max_length``,
    ``long_documents``, ``window_overlap``, ...) and the engine's; see :func:`engine_kwargs`.
    Integrations call it when they are configured, so that a typo fails there.
    """
    own = _reranker_options()
    engines.check_options(engine, options, also=own)
    core = {k: v for k, v in options.items() if k in own}
    rest = {k: v for k, v in options.items() if k not in own}
    return {**core, **engines.engine_options(engine, model=model, base_url=base_url, api_key=api_key, **rest)}


def build_reranker(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Reranker:
    """A :class:`~qwen3_rerank.Reranker` that owns a new ``engine`` (closed by its ``close()``).

    Arguments as :func:`reranker_kwargs`.

    Example:
        >>> from qwen3_rerank.settings import build_reranker
        >>> reranker = build_reranker("transformers", dtype="bfloat16", max_length=4096)  # doctest: +SKIP
    """
    return Reranker(engine, **reranker_kwargs(engine, model=model, base_url=base_url, api_key=api_key, **options))
