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
The values are checked too, where the signature's annotations and the engines' documented choices
say what is valid (``dtype``, ``device``, counts that must be positive, ...), and a model given as
a local path (``./ckpt``, ``~/models/x``, ``/data/x``) must exist.

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
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import engines
from ._exceptions import ConfigurationError
from .engines.remote import APIS as _REMOTE_APIS

if TYPE_CHECKING:
    from ._reranker import Reranker
    from .engines import Engine

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "ENGINE_NAMES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "build_engine",
    "build_reranker",
    "check_top_n",
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

# Documented values of engine options, by name: a name means the same thing in every engine that
# takes it. Only options an engine names in its signature are checked; what VLLMEngine passes on
# to vLLM is vLLM's to check.
DTYPES = ("float32", "bfloat16", "float16", "auto")
"""The ``dtype`` values the local engines accept (``auto``: the engine's choice for the device)."""
_DEVICE = re.compile(r"(cpu|auto|(cuda|npu)(:\d+)?)")
_DEVICES = "cpu, cuda, cuda:N, npu, npu:N or auto"
_AT_LEAST = {
    "batch_size": 1, "max_batch_tokens": 1, "max_model_len": 1, "tensor_parallel_size": 1,
    "data_parallel_size": 1, "replicas": 1, "max_batch_size": 1, "max_concurrency": 1,
    "max_connections": 1, "max_retries": 0,
}  # fmt: skip
_POSITIVE = ("timeout", "connect_timeout", "total_timeout")
_NON_NEGATIVE = ("backoff", "max_backoff")
_CHOICES: dict[str, tuple[Any, ...]] = {
    "reuse_prefix": (True, False, "auto"),
    "api": _REMOTE_APIS,  # the remote engine's API shapes, listed once there
}
# Annotation words (the engines' modules use `from __future__ import annotations`) -> types.
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
}  # fmt: skip


def check_top_n(top_n: Any) -> int | None:
    """``top_n`` if it is a positive int or ``None`` (all results); anything else is a ValueError.

    ``0`` is refused: some rerank APIs (NVIDIA's, vLLM's ``/rerank``) read it as "all", others as
    "none", so it cannot mean either silently here.
    """
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n <= 0):
        raise ValueError(f"top_n must be a positive int, or None for all results; got {top_n!r} (use None for all)")
    return top_n


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
            raise ConfigurationError(
                f"base_url must be a URL string or a list of them, got {type(item).__name__}: {item!r}"
            )
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


def _signature(engine: str) -> tuple[str, dict[str, Any], bool]:
    """The engine class's name, its named ``__init__`` options (name -> annotation), and whether
    it forwards others."""
    cls = engines.engine_class(engine)  # imports only that engine's module: no torch/vllm/httpx
    params = inspect.signature(cls).parameters.values()
    named = {
        p.name: p.annotation
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _OWN_SETTINGS
    }
    forwards = any(p.kind is p.VAR_KEYWORD for p in params)
    return cls.__name__, named, forwards


_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "None"}


def _either(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _value_problem(key: str, value: Any, annotation: Any) -> str | None:
    """What is wrong with ``key=value`` by the documented choices and the annotation, or ``None``."""
    given = f"{key}={value!r}"
    if key == "dtype":
        name = value if isinstance(value, str) else str(value).removeprefix("torch.")  # a torch.dtype
        return None if name in DTYPES else f"{given}: choose {_either(DTYPES)}"
    if key == "device":
        ok = value is None or (isinstance(value, str) and _DEVICE.fullmatch(value) is not None)
        return None if ok else f"{given}: choose {_DEVICES}"
    if key in _CHOICES:
        ok = any(value is c or (isinstance(c, str) and value == c) for c in _CHOICES[key])
        return None if ok else f"{given}: choose {_either(map(repr, _CHOICES[key]))}"
    words = [w.strip() for w in annotation.split("|")] if isinstance(annotation, str) else []
    if value is None and "None" in words:
        return None
    integer = isinstance(value, int) and not isinstance(value, bool)
    number = (integer or isinstance(value, float)) and math.isfinite(value)
    if key in _AT_LEAST:
        return None if integer and value >= _AT_LEAST[key] else f"{given}: it must be an integer >= {_AT_LEAST[key]}"
    if key in _POSITIVE:
        return None if number and value > 0 else f"{given}: it must be a number of seconds > 0"
    if key in _NON_NEGATIVE:
        return None if number and value >= 0 else f"{given}: it must be a number of seconds >= 0"
    if key == "gpu_memory_utilization":
        return None if number and 0 < value <= 1 else f"{given}: it must be a fraction of the device memory in (0, 1]"
    if words and all(w in _TYPES for w in words):
        allowed = tuple(t for w in words for t in _TYPES[w])
        if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in words):
            return f"{given}: it must be {_either(_WORDS[w] for w in words)}"
    return None


def validate_engine_options(engine: str, options: Mapping[str, Any], *, also: Iterable[str] = ()) -> None:
    """Refuse options that ``engine``'s constructor does not take, or values it would refuse,
    before anything loads.

    Values are checked where the engine documents them: ``dtype`` (:data:`DTYPES`, or a
    ``torch.dtype``), ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``npu``, ``npu:N``, ``auto``),
    counts that must be positive (``batch_size``, ``max_batch_tokens``, ``max_model_len``, ...),
    timeouts, fixed choices (``api``, ``reuse_prefix``) and the types the signature annotates.
    Options an engine passes on to its backend (vLLM's own) are left to the backend.

    Args:
        engine: ``"transformers"``, ``"vllm"`` or ``"remote"``.
        options: The keyword options meant for the engine.
        also: Further accepted names, e.g. the :class:`~qwen3_rerank.Reranker` options that
            :func:`build_reranker` takes in the same mapping (their values are the Reranker's
            to check).

    Raises:
        ConfigurationError: an unknown engine, an unknown option (naming the closest valid one and
            listing them all), ``model``/``base_url``/``api_key`` passed as an option, or a value
            the engine does not accept (naming the valid ones).
    """
    cls_name, named, forwards = _signature(engine)
    valid = sorted(set(named) | set(also))
    for key, value in options.items():
        if key in named:
            problem = _value_problem(key, value, named[key])
            if problem is not None:
                raise ConfigurationError(f"the {engine} engine does not accept {problem}")
            continue
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


def _looks_like_path(model: str) -> bool:
    # A hub id is 'name' or 'org/name': never absolute, never starting with '.' or '~', one '/' at most.
    return (
        model.startswith((".", "~"))
        or os.path.isabs(model)
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )


def _model_path(model: str, *, source: str) -> str:
    """``model`` with ``~`` expanded; a path-like one must name an existing directory."""
    if not _looks_like_path(model):
        return model
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return path
    what = "not a directory" if os.path.exists(path) else "no such directory"
    raise ConfigurationError(
        f"{what}: {model!r}{source}; the model must be a local checkpoint directory (with config.json "
        f"and tokenizer.json) or a hub id such as {DEFAULT_MODEL!r}"
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
    :func:`validate_engine_options`; ``device="auto"`` is left out (the engine's default: CUDA,
    then Ascend NPU, then CPU). A ``model`` that is a path (it starts with ``/``, ``.`` or ``~``,
    or holds more ``/`` than a hub id's one) must be an existing directory; ``~`` is expanded.
    Nothing is loaded or contacted.

    Raises:
        ConfigurationError: a bad option or value, a missing base URL for the remote engine, or
            ``no such directory`` for a model path that does not exist.
    """
    validate_engine_options(engine, options)
    kwargs = dict(options)
    if kwargs.get("device") == "auto":
        del kwargs["device"]
    resolved = resolve_model(model, engine=engine)
    if resolved is not None:
        resolved = _model_path(resolved, source="" if model is not None and str(model) else f" (from ${ENV_MODEL})")
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
