"""``qwen3-rerank make-test-model``: write an offline checkpoint with random weights.

See :mod:`qwen3_rerank.testing`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._base import EXIT_OK, CLIError, CLISubcommand

__all__ = ["MakeTestModelCommand"]


class MakeTestModelCommand(CLISubcommand):
    name = "make-test-model"
    help = "write a random-weight Qwen3-Reranker checkpoint with the real tokenizer"
    description = (
        "Write an offline test checkpoint: the real Qwen3 tokenizer and random weights drawn from a "
        "fixed --seed (scores are meaningless; use it to test plumbing and engines)."
    )

    def add_arguments(self, m: argparse.ArgumentParser) -> None:
        m.add_argument("directory", metavar="DIR")
        m.add_argument(
            "--shape",
            choices=("tiny", "0.6B", "4B", "8B"),
            default="tiny",
            help="tiny (default, ~10M params) or a real size",
        )
        m.add_argument("--seq-cls", action="store_true", help="write the converted Qwen3ForSequenceClassification form")
        m.add_argument(
            "--seed",
            type=int,
            default=0,
            help="random seed of the weights (default 0): the same seed writes the same model",
        )
        m.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
        m.add_argument(
            "--device", default="cpu", help="where to initialise the weights (cuda is quicker for large shapes)"
        )

    def run(self, args: argparse.Namespace) -> int:
        target = Path(args.directory)
        if target.exists() and not target.is_dir():
            raise CLIError(f"{args.directory!r} exists and is not a directory")
        if target.is_dir() and (target / "config.json").exists():
            raise CLIError(f"{args.directory!r} already holds a model (config.json); choose an empty or new directory")
        from ..testing import make_test_model

        started = time.perf_counter()
        path = make_test_model(
            target, shape=args.shape, seq_cls=args.seq_cls, seed=args.seed, dtype=args.dtype, device=args.device
        )
        kind = "Qwen3ForSequenceClassification" if args.seq_cls else "Qwen3ForCausalLM"
        print(f"wrote a {args.shape} {kind} test model to {path} in {time.perf_counter() - started:.1f} s")
        print("its weights are random: scores are meaningless, use it to test engines and pipelines offline")
        return EXIT_OK
