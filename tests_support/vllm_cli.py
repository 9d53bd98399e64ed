"""Parse a ``vllm serve`` command line with the installed vLLM's own parser (nothing is started).

``vllm serve`` builds its parser in ``vllm.entrypoints.cli.serve.ServeSubcommand.subparser_init``
(on a ``FlexibleArgumentParser``, which also reads ``--hf_overrides`` as ``--hf-overrides``); the
same class exists from vLLM 0.9 to 0.32, so a flag this vLLM does not know fails here exactly as
it fails in a shell.

Example:
    >>> args = parse_vllm_serve(["vllm", "serve", "M", "--runner", "pooling"])  # doctest: +SKIP
    >>> args.runner  # doctest: +SKIP
    'pooling'
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence

__all__ = ["VLLMServeUsageError", "parse_vllm_serve"]


class VLLMServeUsageError(Exception):
    """vLLM's parser refused the command line; the message is what vLLM printed."""


def _serve_parser() -> argparse.ArgumentParser:
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM before the utils package was split
        from vllm.utils import FlexibleArgumentParser  # type: ignore[attr-defined,no-redef]
    from vllm.entrypoints.cli.serve import ServeSubcommand

    root = FlexibleArgumentParser(prog="vllm")
    ServeSubcommand().subparser_init(root.add_subparsers(dest="subparser"))
    return root


def parse_vllm_serve(argv: Sequence[str]) -> argparse.Namespace:
    """``["vllm", "serve", MODEL, *flags]`` parsed as the installed ``vllm serve`` would.

    Raises:
        VLLMServeUsageError: vLLM's parser refused it (unknown flag, bad value).
    """
    if list(argv[:2]) != ["vllm", "serve"]:
        raise ValueError(f"not a `vllm serve` command: {list(argv)!r}")
    parser = _serve_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(list(argv[1:]))
    except SystemExit as exc:
        raise VLLMServeUsageError(err.getvalue().strip() or f"vllm serve exited with {exc.code}") from None
