"""Settings shared by the command line and the integrations, and one factory from them to an engine.

The default model, the environment variables and the check of engine options live here and
nowhere else:

* :data:`ENV_MODEL` (``QWEN3_RERANK_MODEL``): the model when none is given;
* :data:`ENV_BASE_URL` (``QWEN3_RERANK_BASE_URL``): the server(s) of the remote engine, commas
  between replicas;
* :data:`ENV_API_KEY` (``QWEN3_RERANK_API_KEY``): the remote engine's bearer token.

Checking options costs nothing: it reads the engine class's ``__init__`` signature (the engine's
module imports no torch, vLLM or httpx) and never loads a model or opens a connection, so a typo
such as ``dtyp=`` fails when a pipeline is configured, not minutes later when the model loads.

Example:
    >>> from qwen3_rerank.settings import engine_kwargs
    >>> engine_kwargs("transformers", dtype="float32")  # with $QWEN3_RERANK_MODEL unset
    {'dtype': 'float32', 'model': 'Qwen/Qwen3-Reranker-0.6B'}
    >>> engine_kwargs("transformers", dtyp="float32")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ConfigurationError: the transformers engine does not accept that option: 'dtyp'; did you mean 'dtype'? ...
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import engines
from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._reranker import Reranker
    from .engines import Engine

__all__ = [
    "DEFAULT_MODEL",
    "ENGINE_NAMES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "build_engine",
    "build_reranker",
    "engine_kwargs",
    "reranker_kwargs",
    "resolve_api_key",
    "resolve_base_urls",
    "resolve_model",
    "validate_engine_options",
]

DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"
"""The checkpoint the local engines load when neither ``model`` nor ``$QWEN3_RERANK_MODEL`` is set."""

ENV_MODEL = "QWEN3_RERANK_MODEL"
ENV_BASE_URL = "QWEN3_RERANK_BASE_URL"
ENV_API_KEY = "QWEN3_RERANK_API_KEY"

ENGINE_NAMES = ("transformers", "vllm", "remote")
"""The engine names the factory accepts (``Reranker(engine=...)`` accepts the same)."""

# Settings with an argument of their own in the factory, never passed as engine options.
_OWN_SETTINGS = ("model", "base_url", "api_key")

# Below this similarity an unknown name gets no "did you mean". An engine that forwards unknown
# names (VLLMEngine's **llm_kwargs go to vllm.LLM) refuses only names this close to one of its own
# options ('dtyp' is 0.89 from 'dtype'; vLLM's 'pipeline_parallel_size' is 0.76 from
# 'tensor_parallel_size') that do not merely extend it ('data_parallel_size_local').
_CUTOFF = 0.6
_FORWARD_CUTOFF = 0.85


def resolve_model(model: str | os.PathLike[str] | None = None, *, engine: str = "transformers") -> str | None:
    """The model to use: ``model``, else ``$QWEN3_RERANK_MODEL``, else :data:`DEFAULT_MODEL`.

    The remote engine has no default: ``None`` lets it ask the server which model it serves.
    """
    if model is not None and str(model):
        return str(model)
    from_env = os.environ.get(ENV_MODEL)
    if from_env:
        return from_env
    return None if engine == "remote" else DEFAULT_MODEL


def resolve_base_urls(base_url: str | Sequence[str] | None = None) -> list[str]:
    """The remote engine's server URLs: ``base_url``, else ``$QWEN3_RERANK_BASE_URL``.

    A string may hold several URLs separated by commas. Returns ``[]`` when neither is set.

    Raises:
        ConfigurationError: a URL does not start with ``http://`` or ``https://``.
    """
    items = [] if base_url is None else [base_url] if isinstance(base_url, str) else list(base_url)
    source = ""
    if not any(items):  # None, "", [] or [""]
        items, source = [os.environ.get(ENV_BASE_URL, "")], f" (from ${ENV_BASE_URL})"
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"base_url must be a URL string or a list of them, got {type(item).__name__}: {item!r}")
        urls += [u.strip() for u in item.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"a base URL must start with http:// or https://, got {url!r}{source}; e.g. http://127.0.0.1:8000"
            )
    return urls


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The remote engine's API key: ``api_key``, else ``$QWEN3_RERANK_API_KEY``, else ``None``."""
    return api_key or os.environ.get(ENV_API_KEY) or None


def _signature(engine: str) -> tuple[str, list[str], bool]:
    """The engine class's name, its named ``__init__`` options, and whether it forwards others."""
    cls = engines.engine_class(engine)  # imports only that engine's module: no torch/vllm/httpx
    params = inspect.signature(cls).parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _OWN_SETTINGS]
    forwards = any(p.kind is p.VAR_KEYWORD for p in params)
    return cls.__name__, named, forwards


def validate_engine_options(engine: str, options: Mapping[str, Any], *, also: Iterable[str] = ()) -> None:
    """Refuse option names that ``engine``'s constructor does not take, before anything loads.

    Args:
        engine: ``"transformers"``, ``"vllm"`` or ``"remote"``.
        options: The keyword options meant for the engine (their values are not checked here).
        also: Further accepted names, e.g. the :class:`~qwen3_rerank.Reranker` options that
            :func:`build_reranker` takes in the same mapping.

    Raises:
        ConfigurationError: an unknown engine, an unknown option (naming the closest valid one and
            listing them all), or ``model``/``base_url``/``api_key`` passed as an option.
    """
    cls_name, named, forwards = _signature(engine)
    valid = sorted(set(named) | set(also))
    for key in options:
        if key in _OWN_SETTINGS:
            raise ConfigurationError(
                f"{key} is a setting of its own, not an engine option: pass {key}=... "
                f"(on the command line --{key.replace('_', '-')})"
            )
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=_FORWARD_CUTOFF if forwards else _CUTOFF)
        if forwards and (not close or key.startswith(close[0] + "_")):
            continue  # e.g. quantization=...: passed on to the backend unchanged
        hint = f"; did you mean {close[0]!r}?" if close else "."
        tail = f" {cls_name} passes other names on to its backend; this one looks like a typo." if forwards else ""
        raise ConfigurationError(
            f"the {engine} engine does not accept that option: {key!r}{hint} Valid options: {', '.join(valid)}.{tail}"
        )


def engine_kwargs(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The complete, checked keyword arguments of ``engine``'s constructor.

    ``model``, ``base_url`` and ``api_key`` fall back to their environment variables (and
    ``model`` to :data:`DEFAULT_MODEL` for the local engines); ``options`` are checked with
    :func:`validate_engine_options`. Nothing is loaded or contacted.
    """
    validate_engine_options(engine, options)
    kwargs = dict(options)
    resolved = resolve_model(model, engine=engine)
    if engine == "remote":
        urls = resolve_base_urls(base_url)
        if not urls:
            raise ConfigurationError(
                f"the remote engine needs base_url=, its server's URL (e.g. 'http://127.0.0.1:8000'), "
                f"or ${ENV_BASE_URL} set"
            )
        kwargs["base_url"] = urls if len(urls) > 1 else urls[0]
        key = resolve_api_key(api_key)
        if key is not None:
            kwargs["api_key"] = key
    else:
        for name, value in (("base_url", base_url), ("api_key", api_key)):
            if value:
                raise ConfigurationError(f"{name} is used by the remote engine only, not by {engine!r}")
    if resolved is not None:
        kwargs["model"] = resolved
    return kwargs


def build_engine(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Engine:
    """Create ``engine`` from settings (see :func:`engine_kwargs`); only that engine's packages load.

    Example:
        >>> from qwen3_rerank.settings import build_engine
        >>> engine = build_engine("remote", base_url="http://127.0.0.1:8000")  # doctest: +SKIP
    """
    kwargs = engine_kwargs(engine, model=model, base_url=base_url, api_key=api_key, **options)
    return engines.engine_class(engine)(**kwargs)


def _reranker_options() -> tuple[str, ...]:
    from ._reranker import Reranker

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
    validate_engine_options(engine, options, also=own)
    core = {k: v for k, v in options.items() if k in own}
    rest = {k: v for k, v in options.items() if k not in own}
    return {**core, **engine_kwargs(engine, model=model, base_url=base_url, api_key=api_key, **rest)}


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
    from ._reranker import Reranker

    return Reranker(engine, **reranker_kwargs(engine, model=model, base_url=base_url, api_key=api_key, **options))
