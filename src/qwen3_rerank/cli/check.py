"""``qwen3-rerank check``: score fixed pairs with the configured engine and with a float32
reference on the same weights, print PASS or FAIL with the likely cause and fix (and, for a remote
server, what its other clients get: :mod:`qwen3_rerank.diagnosis.clients`).

The diagnosis itself is library code: the :mod:`qwen3_rerank.diagnosis` package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..diagnosis.clients import CLIENTS_TIME_LIMIT
from . import _engine
from ._base import EXIT_FAIL, EXIT_OK, PROG, CLIError, CLISubcommand, positive_float

__all__ = ["CheckCommand"]


class CheckCommand(CLISubcommand):
    name = "check"
    help = "self-test the configured engine against the reference formula"
    description = (
        "Score a fixed set of pairs (a truncated one and a special-token injection included) with the "
        "configured engine and with the embedded reference (float32) on the same weights; print PASS "
        "or FAIL with what differed and the likely fix. With --engine remote it also reports what other "
        "clients of the server get: raw query/documents sent to its own /rerank, /v1/rerank and /score, "
        "compared with the model card (informational: it does not change PASS/FAIL)."
    )

    def add_arguments(self, c: argparse.ArgumentParser) -> None:
        _engine.add_engine_arguments(c)
        c.add_argument(
            "--tolerance",
            type=positive_float,
            default=None,
            help="largest allowed |score difference| (default 1e-4 in float32, 0.03 otherwise)",
        )
        c.add_argument(
            "--reference-device",
            default="cpu",
            help="device of the float32 reference engine: cpu (default), cuda, cuda:N, npu, npu:N or auto",
        )
        c.add_argument(
            "--no-reference",
            action="store_true",
            help="skip the reference comparison (sanity checks and the remote template guard only)",
        )
        c.add_argument(
            "--clients-time-limit",
            type=positive_float,
            default=CLIENTS_TIME_LIMIT,
            metavar="SECONDS",
            help="--engine remote: the most seconds the other-clients part may take altogether "
            f"(default {CLIENTS_TIME_LIMIT:g})",
        )
        c.add_argument("--json", action="store_true", help="print the report as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from .. import settings
        from .._exceptions import ConfigurationError
        from ..diagnosis import CHECK_CASES, CHECK_MAX_LENGTH, format_check_report, run_check

        if not args.no_reference:  # before the engine loads, which may take minutes
            try:
                settings.validate_engine_options("transformers", {"device": args.reference_device})
            except ConfigurationError:
                raise CLIError(
                    f"--reference-device {args.reference_device!r}: choose cpu, cuda, cuda:N, npu, npu:N or auto"
                ) from None
            if args.reference_device != "auto":
                _engine.check_device(args.reference_device)
        engine = _engine.build_engine(args)
        reference = None
        try:
            max_length = min(args.max_length or CHECK_MAX_LENGTH, CHECK_MAX_LENGTH)
            ref_desc = "none"
            if not args.no_reference:
                reference, ref_desc = _reference_engine(args, engine)
            header = (
                f"{PROG} check: engine={args.engine} ({engine!r}); reference={ref_desc}; "
                f"{len(CHECK_CASES)} pairs, max_length={max_length}"
            )
            report = run_check(
                engine,
                reference,
                tolerance=args.tolerance,
                max_length=max_length,
                clients_time_limit=args.clients_time_limit,
            )
        finally:
            engine.close()
            if reference is not None:
                reference.close()
        if args.json:
            # allow_nan=False: to_dict() has no NaN left; valid JSON or an error, never 'NaN'.
            json.dump(report.to_dict(), sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_check_report(report, header=header))
        sys.stdout.flush()
        return EXIT_OK if report.passed else EXIT_FAIL


def _reference_engine(args: argparse.Namespace, engine: Any) -> tuple[Any, str]:
    model = _engine.model_for(args)
    if model is None:
        candidate = getattr(engine, "model", None) or getattr(engine, "model_name", None)
        if isinstance(candidate, str) and Path(candidate).is_dir():
            model = candidate
    if model is None:
        raise CLIError(
            "check needs the model's weights for the reference: pass --model (the hub id or local path of "
            "the checkpoint the server runs), or --no-reference for the sanity checks and template guard only"
        )
    from ..diagnosis.reference import build_reference

    try:
        return build_reference(model, device=args.reference_device)
    except ImportError as exc:
        raise CLIError(
            f"the reference needs the embedded engine: {exc}. Or run 'qwen3-rerank check --no-reference'", EXIT_FAIL
        ) from None
