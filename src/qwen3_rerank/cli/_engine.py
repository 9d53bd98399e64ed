"""The engine options ``rerank`` and ``check`` share, and the engine they describe.

Built via :mod:`qwen3_rerank.settings`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import engines, settings
from ..settings import DEFAULT_MODEL, ENGINE_NAMES, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from ._base import CLIError, positive_int

if TYPE_CHECKING:
    from ..engines import Engine

__all__ = ["add_engine_arguments", "build_engine", "engine_kwargs", "model_for"]


def _engine_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. gpu_memory_utilization=0.3), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a plain string such as a path
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    return key, value


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """The ``engine`` option group: which engine, which model or server, and its keywords."""
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine",
        "-e",
        default="transformers",
        choices=ENGINE_NAMES,
        help="transformers: embedded torch engine (default); vllm: in-process vLLM; remote: a vLLM server",
    )
    g.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"hub id or local path of the checkpoint (default: ${ENV_MODEL} or {DEFAULT_MODEL}; "
        "for --engine remote: optional, the tokenizer source)",
    )
    g.add_argument(
        "--base-url",
        action="append",
        default=None,
        metavar="URL",
        help=f"server URL for --engine remote (repeat, or separate with commas, for replicas; default ${ENV_BASE_URL})",
    )
    g.add_argument("--api-key", default=None, help=f"bearer token for --engine remote (default ${ENV_API_KEY})")
    g.add_argument(
        "--device", default=None, help="transformers engine: cpu, cuda, cuda:N, npu, npu:N or auto (default: auto)"
    )
    g.add_argument("--dtype", default=None, help="float32, bfloat16, float16 or auto (default: the engine's)")
    g.add_argument(
        "--engine-option",
        "-o",
        action="append",
        type=_engine_option,
        default=[],
        metavar="KEY=VALUE",
        help="any other engine keyword, VALUE parsed as JSON when it can be "
        "(e.g. -o gpu_memory_utilization=0.3 -o enforce_eager=true)",
    )
    g.add_argument(
        "--max-length", type=positive_int, default=None, help="most tokens per scored sequence (default 8192)"
    )


def model_for(args: argparse.Namespace) -> str | None:
    """The model the options name (``--model``, ``$QWEN3_RERANK_MODEL``, the default; none for remote)."""
    model = settings.resolve_model(args.model, engine=args.engine)
    return None if model is None else os.path.expanduser(model)


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The checked keyword arguments of the engine the options describe; loads and contacts nothing.

    Every problem with the engine options (a flag that does not apply to the engine, an unknown
    option or an invalid value, a model path that does not exist) is found here, so that a
    command can check them before it reads its input. What applies to which engine is what the
    engine class states (``uses_server``, ``uses_device``).
    """
    cls = engines.engine_class(args.engine)
    options: dict[str, Any] = dict(args.engine_option)
    if cls.uses_server:
        if not settings.resolve_base_urls(args.base_url):
            raise CLIError(
                f"--engine {args.engine} needs --base-url URL (or ${ENV_BASE_URL}), e.g. --base-url http://127.0.0.1:8000"
            )
        if args.dtype is not None:
            raise CLIError(
                f"--dtype does not apply to --engine {args.engine}: set it on the server (vllm serve --dtype)"
            )
    else:
        servers = " or ".join(n for n in engines.ENGINES if engines.engine_class(n).uses_server)
        for flag, value in (("--base-url", args.base_url), ("--api-key", args.api_key)):
            if value:
                raise CLIError(f"{flag} applies to --engine {servers}, not to --engine {args.engine}")
        if args.dtype is not None:
            options.setdefault("dtype", args.dtype)
    if args.device is not None:
        if not cls.uses_device:
            takes = ", ".join(n for n in engines.ENGINES if engines.engine_class(n).uses_device)
            where = "the server chooses its own device" if cls.uses_server else "it picks its platform itself"
            raise CLIError(
                f"--device does not apply to --engine {args.engine} ({where}; see 'qwen3-rerank info'); "
                f"engines that take it: {takes}"
            )
        options.setdefault("device", args.device)
    settings.validate_engine_options(args.engine, options)  # before -o model=... collides with --model
    return settings.engine_kwargs(
        args.engine, model=args.model, base_url=args.base_url, api_key=args.api_key, **options
    )


def build_engine(args: argparse.Namespace) -> Engine:
    """Create the engine the options describe (imports only that engine's packages)."""
    kwargs = engine_kwargs(args)
    model = kwargs.get("model")
    if not engines.engine_class(args.engine).uses_server and model is not None and Path(model).is_dir():
        # Nothing to download: keep the loader's progress bars off the terminal.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return settings.build_engine(args.engine, **kwargs)
