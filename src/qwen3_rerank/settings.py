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
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from ._defaults import USE_DEFAULT, check_top_n
from ._reranker import Reranker
from .engines import DTYPES

if TYPE_CHECKING:
    from ._types import RerankResult

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "ENGINE_NAMES",
    "ENGINE_SETTINGS",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "RerankerSlot",
    "USE_DEFAULT",
    "build_engine",
    "build_integration_reranker",
    "build_reranker",
    "check_integration_settings",
    "check_keywords",
    "check_top_n",
    "engine_kwargs",
    "has_credentials",
    "keyword_hint",
    "redact_url",
    "redacted",
    "reranker_kwargs",
    "resolve_api_key",
    "resolve_base_urls",
    "resolve_model",
    "result_metadata",
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


engine_kwargs = engines.engine_options
"""The complete, checked keyword arguments of an engine's constructor; nothing is loaded
(:func:`qwen3_rerank.engines.engine_options`, under the name the CLI and integrations use)."""

build_engine = engines.create_engine
"""Create an engine from settings (:func:`qwen3_rerank.engines.create_engine`)."""


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


# -- what the integrations share ------------------------------------------------------------------
ENGINE_SETTINGS = ("engine", "model", "base_url", "engine_options")
"""The fields of an integration that describe the engine to build (left unset with ``reranker=``)."""

_KEYWORD_HINTS = {
    "trust_remote_code": "is not needed: Qwen3-Reranker runs no remote code (qwen3-rerank loads it as it is)",
    "cohere_api_key": "belongs to Cohere; pass api_key= (the key of your qwen3-rerank or vLLM server)",
    "model_name": "is called model= here",
    "top_k": "is called top_n= here",
    "max_seq_length": "is an engine option here: engine_options={'max_length': ...}",
}


def keyword_hint(name: str) -> str | None:
    """Where a keyword users carry over from other rerankers belongs, or ``None`` if unknown.

    Engine options (``device=``, ``dtype=``, ``batch_size=`` ...) go in ``engine_options``; a few
    names from sentence-transformers and Cohere have their own answer.

    Example:
        >>> keyword_hint("device")
        "device= is an engine option: pass engine_options={'device': ...}"
    """
    if name in _KEYWORD_HINTS:
        return f"{name}= {_KEYWORD_HINTS[name]}"
    options = set(_reranker_options())
    for engine in engines.ENGINES:
        params = inspect.signature(engines.engine_class(engine)).parameters
        options |= {p for p in params if p not in ("self", "model", "base_url", "api_key")}
    if name in options:
        return f"{name}= is an engine option: pass engine_options={{{name!r}: ...}}"
    return None


def check_keywords(known: Iterable[str], given: Any) -> None:
    """Refuse, with :func:`keyword_hint`'s answer, a keyword another reranker's users would pass.

    ``given`` is the data an integration is constructed from; names that are ``known`` (its own
    fields) and names without a hint pass (the framework's own "extra" check reports those).

    Raises:
        ValueError: e.g. ``device= is an engine option: pass engine_options={'device': ...}``.
    """
    if not isinstance(given, Mapping):
        return
    fields = set(known)
    for name in given:
        hint = keyword_hint(name) if isinstance(name, str) and name not in fields else None
        if hint is not None:
            raise ValueError(hint)


def check_integration_settings(
    *,
    reranker: Any,
    given: Iterable[str],
    engine: str,
    model: str | None,
    base_url: str | Sequence[str] | None,
    engine_options: Mapping[str, Any],
) -> None:
    """The checks both integrations run when they are configured (nothing is built or contacted).

    ``given`` names the fields the caller set. An injected ``reranker`` excludes the engine
    settings; ``base_url`` needs an engine that scores on a server; the settings must build
    (:func:`reranker_kwargs`: unknown options, a missing base URL, a model path that does not exist).

    Raises:
        ValueError, TypeError, ConfigurationError: what the caller must change.
    """
    if reranker is not None:
        if not isinstance(reranker, Reranker):
            raise TypeError(f"reranker must be a qwen3_rerank.Reranker, got {type(reranker).__name__}")
        clash = sorted(set(ENGINE_SETTINGS) & set(given))
        if clash:
            raise ValueError(
                f"pass either reranker= or engine settings, not both (got reranker and {clash}); "
                "configure the engine when you build the Reranker"
            )
        return
    if base_url is not None and not engines.engine_class(engine).uses_server:
        raise ValueError(f"base_url is only used by engine='remote', got engine={engine!r}; set engine='remote'")
    reranker_kwargs(engine, model=model, base_url=base_url, **engine_options)


def build_integration_reranker(
    *,
    engine: str,
    model: str | None,
    base_url: str | Sequence[str] | None,
    api_key: str | None,
    engine_options: Mapping[str, Any],
) -> Reranker:
    """The Reranker an integration's settings describe (see :func:`build_reranker`).

    ``api_key`` (often read from ``$QWEN3_RERANK_API_KEY``) is used only by an engine that scores
    on a server; a local engine ignores it instead of refusing it.
    """
    key = api_key if engines.engine_class(engine).uses_server else None
    return build_reranker(engine, model=model, base_url=base_url, api_key=key, **engine_options)


def result_metadata(result: RerankResult, *, windows: bool = False) -> dict[str, Any]:
    """What the integrations add to a returned document's metadata, beside its score.

    ``rerank_logit`` (the exact log-odds) and ``rerank_truncated``; with ``windows`` (the
    reranker's ``long_documents="window"``) also ``rerank_window`` (``None`` when the document fit
    in one) and ``rerank_num_windows``.

    Example:
        >>> from qwen3_rerank import RerankResult
        >>> result_metadata(RerankResult(index=0, document="BM25 ...", score=0.9, logit=2.2))
        {'rerank_logit': 2.2, 'rerank_truncated': False}
    """
    metadata: dict[str, Any] = {"rerank_logit": result.logit, "rerank_truncated": result.truncated}
    if windows:
        metadata.update(rerank_window=result.window, rerank_num_windows=result.num_windows)
    return metadata


def has_credentials(base_url: str | Sequence[str] | None) -> bool:
    """Whether a base URL (or any of a list) holds a password, a token or query values."""
    urls = [] if base_url is None else [base_url] if isinstance(base_url, str) else list(base_url)
    return any(isinstance(u, str) and redact_url(u) != u for u in urls)


def redacted(base_url: str | Sequence[str] | None) -> str | list[str] | None:
    """A base URL (or list) as it may be shown or serialised: credentials replaced by ``***``."""
    if base_url is None or isinstance(base_url, str):
        return None if base_url is None else redact_url(base_url)
    return [redact_url(u) if isinstance(u, str) else u for u in base_url]


class RerankerSlot:
    """The Reranker an integration uses: injected, or built once on first use (thread-safe).

    :meth:`close` closes only what the slot built. A copy (``copy``/``deepcopy``) and an unpickled
    slot are empty: they build their own Reranker from the integration's settings on first use,
    as Cohere's rerankers rebuild their clients. An injected Reranker is shared by copies and
    cannot be pickled (it is not data: the copy would silently build another engine).
    """

    def __init__(self, reranker: Reranker | None = None) -> None:
        self._reranker = reranker
        self.injected = reranker is not None
        self._lock = threading.Lock()

    def get(self, build: Callable[[], Reranker]) -> Reranker:
        """The Reranker, built with ``build()`` on first use."""
        with self._lock:
            if self._reranker is None:
                self._reranker = build()
            return self._reranker

    @property
    def current(self) -> Reranker | None:
        """The Reranker if there is one yet (``None`` before first use)."""
        return self._reranker

    def close(self) -> None:
        """Close the Reranker this slot built (an injected one is left open); idempotent."""
        with self._lock:
            built = None if self.injected else self._reranker
            if built is not None:
                self._reranker = None
        if built is not None:
            built.close()

    def __copy__(self) -> RerankerSlot:
        return RerankerSlot(self._reranker if self.injected else None)

    def __deepcopy__(self, memo: dict[int, Any]) -> RerankerSlot:
        return self.__copy__()

    def __getstate__(self) -> dict[str, Any]:
        if self.injected:
            raise TypeError(
                "cannot pickle an integration built with reranker=...: the Reranker object is not data, "
                "and the copy would silently build the default engine instead. Build it from settings "
                "(engine=, model=, base_url=, engine_options=) to pickle it"
            )
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]  # an empty slot: the engine is rebuilt on first use

    def __repr__(self) -> str:
        state = "injected" if self.injected else "built" if self._reranker is not None else "not built"
        return f"RerankerSlot({state})"
