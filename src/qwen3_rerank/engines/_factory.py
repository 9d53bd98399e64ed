"""The one way from settings to an engine: defaults and environment applied once, options checked.

Every path builds engines here: ``Reranker("name", ...)``, :mod:`qwen3_rerank.settings`, the
CLI, the integrations, the server and the batch job. What differs between engines is stated by
the engine class itself (:class:`~qwen3_rerank.engines.Engine`'s class attributes: ``uses_server``,
``uses_device``, ``option_choices``, ``extra`` ...); nothing here compares engine names.

Checking options costs nothing: it reads the engine class's ``__init__`` signature (an engine's
module imports no torch, vLLM or httpx) and never loads a model or opens a connection, so a typo
such as ``dtyp=`` fails when a pipeline is configured, not minutes later when the model loads.
Values are checked where the signature's annotations and the documented choices say what is
valid (``dtype``, ``device``, counts that must be positive, ...), and a model given as a local
path (``./ckpt``, ``~/models/x``, ``/data/x``) must exist.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._config import DEFAULT_MODEL, ENV_BASE_URL, ENV_MODEL, resolve_api_key, resolve_base_urls, resolve_model
from .._exceptions import ConfigurationError
from ._catalog import ENGINES, engine_class

if TYPE_CHECKING:
    from ._base import Engine

__all__ = ["DTYPES", "check_options", "create_engine", "engine_options"]

# Settings with an argument of their own in the factory, never passed as engine options.
OWN_SETTINGS = ("model", "base_url", "api_key")

# Below this similarity an unknown name gets no "did you mean". An engine that forwards unknown
# names (VLLMEngine's **llm_kwargs go to vllm.LLM) refuses only names this close to one of its own
# options ('dtyp' is 0.89 from 'dtype'; vLLM's 'pipeline_parallel_size' is 0.76 from
# 'tensor_parallel_size') that do not merely extend it ('data_parallel_size_local').
_CUTOFF = 0.6
_FORWARD_CUTOFF = 0.85

# Documented values of engine options, by name: a name means the same thing in every engine that
# takes it. Only options an engine names in its signature are checked; what VLLMEngine passes on
# to vLLM is vLLM's to check. Choices that belong to one engine are its ``option_choices``.
DTYPES = ("float32", "bfloat16", "float16", "auto")
"""The ``dtype`` values the local engines accept (``auto``: the engine's choice for the device)."""
_DEVICE = re.compile(r"(cpu|auto|(cuda|npu)(:\d+)?)")
_DEVICES = "cpu, cuda, cuda:N, npu, npu:N or auto"
_AT_LEAST = {
    "batch_size": 1, "max_batch_tokens": 1, "max_model_len": 1, "tensor_parallel_size": 1,
    "data_parallel_size": 1, "replicas": 1, "max_batch_size": 1, "max_concurrency": 1,
    "max_connections": 1, "max_retries": 0,
}  # fmt: skip
_POSITIVE = ("timeout", "connect_timeout", "total_timeout", "stall_timeout")
_NON_NEGATIVE = ("backoff", "max_backoff")
# Annotation words (the engines' modules use `from __future__ import annotations`) -> types.
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
}  # fmt: skip
_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "None"}


def _signature(cls: type[Engine]) -> tuple[dict[str, Any], bool]:
    """The engine's named ``__init__`` options (name -> annotation) and whether it forwards others."""
    params = inspect.signature(cls).parameters.values()
    named = {
        p.name: p.annotation
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in OWN_SETTINGS
    }
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _either(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _value_problem(cls: type[Engine], key: str, value: Any, annotation: Any) -> str | None:
    """What is wrong with ``key=value`` by the documented choices and the annotation, or ``None``."""
    given = f"{key}={value!r}"
    if key == "dtype":
        name = value if isinstance(value, str) else str(value).removeprefix("torch.")  # a torch.dtype
        return None if name in DTYPES else f"{given}: choose {_either(DTYPES)}"
    if key == "device":
        ok = value is None or (isinstance(value, str) and _DEVICE.fullmatch(value) is not None)
        return None if ok else f"{given}: choose {_DEVICES}"
    choices = cls.option_choices.get(key)
    if choices is not None:
        ok = any(value is c or (isinstance(c, str) and value == c) for c in choices)
        return None if ok else f"{given}: choose {_either(map(repr, choices))}"
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


def check_options(engine: str, options: Mapping[str, Any], *, also: Iterable[str] = ()) -> None:
    """Refuse options that ``engine``'s constructor does not take, or values it would refuse,
    before anything loads.

    Args:
        engine: An engine name (``"transformers"``, ``"vllm"``, ``"remote"``).
        options: The keyword options meant for the engine.
        also: Further accepted names, e.g. the :class:`~qwen3_rerank.Reranker` options that travel
            in the same mapping (their values are the Reranker's to check).

    Raises:
        ConfigurationError: an unknown engine, an unknown option (naming the closest valid one and
            listing them all), ``model``/``base_url``/``api_key`` passed as an option, or a value
            the engine does not accept (naming the valid ones).
    """
    cls = engine_class(engine)  # imports only that engine's module: no torch/vllm/httpx
    named, forwards = _signature(cls)
    valid = sorted(set(named) | set(also))
    for key, value in options.items():
        if key in named:
            problem = _value_problem(cls, key, value, named[key])
            if problem is not None:
                raise ConfigurationError(f"the {engine} engine does not accept {problem}")
            continue
        if key in OWN_SETTINGS:
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
        tail = f" {cls.__name__} passes other names on to its backend; this one looks like a typo." if forwards else ""
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


def engine_options(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The complete, checked keyword arguments of ``engine``'s constructor; nothing is built.

    ``model`` falls back to ``$QWEN3_RERANK_MODEL`` and then, for an engine that does not ask a
    server (``uses_server``), to :data:`~qwen3_rerank.settings.DEFAULT_MODEL`; a server engine's
    ``base_url`` and ``api_key`` fall back to ``$QWEN3_RERANK_BASE_URL`` and
    ``$QWEN3_RERANK_API_KEY``. ``options`` are checked with :func:`check_options`;
    ``device="auto"`` is left out (the engine's default: CUDA, then Ascend NPU, then CPU). A
    ``model`` that is a path must be an existing directory; ``~`` is expanded.

    Raises:
        ConfigurationError: a bad option or value, a missing base URL for a server engine,
            ``base_url``/``api_key`` for an engine without a server, or ``no such directory`` for
            a model path that does not exist.
    """
    check_options(engine, options)
    cls = engine_class(engine)
    kwargs = dict(options)
    if kwargs.get("device") == "auto":
        del kwargs["device"]
    resolved = resolve_model(model, default=None if cls.uses_server else DEFAULT_MODEL)
    if resolved is not None:
        given = model is not None and bool(str(model))
        kwargs["model"] = _model_path(resolved, source="" if given else f" (from ${ENV_MODEL})")
    if cls.uses_server:
        urls = resolve_base_urls(base_url)
        if not urls:
            raise ConfigurationError(
                f"the {engine} engine needs base_url=, its server's URL (e.g. 'http://127.0.0.1:8000'), "
                f"or ${ENV_BASE_URL} set"
            )
        kwargs["base_url"] = urls if len(urls) > 1 else urls[0]
        key = resolve_api_key(api_key)
        if key is not None:
            kwargs["api_key"] = key
    else:
        servers = " or ".join(n for n in ENGINES if engine_class(n).uses_server)
        for name, value in (("base_url", base_url), ("api_key", api_key)):
            if value:
                raise ConfigurationError(f"{name} is used by the {servers} engine only, not by {engine!r}")
    return kwargs


def create_engine(
    engine: str,
    *,
    model: str | os.PathLike[str] | None = None,
    base_url: str | Sequence[str] | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Engine:
    """Create ``engine`` from settings (see :func:`engine_options`); only its packages load.

    Example:
        >>> from qwen3_rerank.engines import create_engine
        >>> engine = create_engine("transformers", dtype="float32")  # doctest: +SKIP
    """
    kwargs = engine_options(engine, model=model, base_url=base_url, api_key=api_key, **options)
    try:
        return engine_class(engine)(**kwargs)
    except TypeError as exc:
        # VLLMEngine passes names it does not know on to vLLM, which refuses the ones it does not know either.
        if "unexpected keyword argument" in str(exc):
            raise ConfigurationError(f"the {engine} engine does not accept that option: {exc}") from None
        raise
