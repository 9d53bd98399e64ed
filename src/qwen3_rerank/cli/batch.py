"""``qwen3-rerank batch INPUT OUTPUT``: score every row of a Parquet, JSONL or CSV file, resumably.

``--workers 1`` (the default) runs in this process without Ray; ``--workers N`` runs N engines on
Ray Data (a local Ray, or the cluster at ``--ray-address``). Either way the input is read in parts
and each scored part is committed to ``OUTPUT.parts/``: an interrupted run started again with the
same arguments scores only the missing parts (:mod:`qwen3_rerank.batch._job`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from . import _engine
from ._base import EXIT_OK, CLIError, CLISubcommand, non_negative_int, positive_float, positive_int

__all__ = ["BatchCommand"]

DEFAULT_BATCH_SIZE = 256


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class BatchCommand(CLISubcommand):
    name = "batch"
    help = "score every row of a Parquet, JSONL or CSV file (resumable; Ray with --workers N)"
    description = (
        "Score the rows of INPUT and write them, every column kept, with a score column to OUTPUT "
        "(formats by extension: .parquet, .jsonl, .csv). Rows are (query, document) pairs, or a query "
        "and a list of documents (then a list of scores and of ranks comes out). Interrupted, the same "
        "command resumes where it stopped."
    )

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("input", metavar="INPUT", help="the rows to score: .parquet, .jsonl or .csv")
        p.add_argument("output", metavar="OUTPUT", help="where to write them: .parquet, .jsonl or .csv")
        cols = p.add_argument_group("columns")
        cols.add_argument("--query-column", default="query", help="the query column (default: query)")
        cols.add_argument(
            "--document-column", default="document", help="the document column: a text or a list of texts"
        )
        cols.add_argument("--score-column", default="score", help="the column added with P(yes) (default: score)")
        cols.add_argument("--rank-column", default="rank", help="the ranks column of the lists layout (default: rank)")
        cols.add_argument(
            "--layout",
            choices=("auto", "pairs", "lists"),
            default="auto",
            help="pairs: a document per row; lists: a list of documents per row (in CSV a JSON array); "
            "auto (default): lists when the document column is a list",
        )
        p.add_argument("--instruction", "-i", default=None, help="task instruction (default: the model card's)")
        p.add_argument("--long-documents", choices=("truncate", "window"), default="truncate")
        p.add_argument("--window-overlap", type=non_negative_int, default=64)
        run = p.add_argument_group("running")
        run.add_argument(
            "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="rows per engine call (default 256)"
        )
        run.add_argument(
            "--part-rows",
            type=positive_int,
            default=None,
            help="rows per committed part, the unit of resume (default 10000)",
        )
        run.add_argument(
            "--workers", type=positive_int, default=1, help="engines; 1 (default) runs here without Ray, N on Ray"
        )
        run.add_argument(
            "--num-gpus-per-worker", type=_non_negative_float, default=0.0, help="GPUs per Ray worker (default 0)"
        )
        run.add_argument(
            "--cpus-per-worker", type=positive_float, default=1.0, help="CPUs reserved per Ray worker (default 1)"
        )
        run.add_argument(
            "--ray-address",
            default=None,
            help="a running Ray cluster (e.g. auto, ray://HOST:10001); default: a local Ray",
        )
        run.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
        prog = run.add_mutually_exclusive_group()
        prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
        prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
        _engine.add_engine_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        from ..batch import DEFAULT_PART_ROWS, BatchJob, file_format

        for path in (args.input, args.output):
            try:
                file_format(path)
            except ValueError as exc:
                raise CLIError(str(exc)) from None
        kwargs = _engine.engine_kwargs(args)  # bad engine options fail before the input is read
        options: dict[str, Any] = {"long_documents": args.long_documents, "window_overlap": args.window_overlap}
        if args.max_length is not None:
            options["max_length"] = args.max_length
        model = kwargs.pop("model", None)
        engine_options = {**kwargs, **options}
        rerank_options: dict[str, Any] = {
            "engine": args.engine,
            "model": model,
            "engine_options": engine_options,
            "instruction": args.instruction,
            "query_column": args.query_column,
            "document_column": args.document_column,
            "score_column": args.score_column,
            "rank_column": args.rank_column,
            "layout": args.layout,
        }
        # What changes the scores: recorded in the parts folder and compared on resume. The API key
        # is a secret and changes no score; how many workers run does not change them either.
        recorded = {k: v for k, v in rerank_options.items() if k != "engine_options"}
        recorded["engine_options"] = {k: v for k, v in engine_options.items() if k != "api_key"}
        try:
            job = BatchJob.open(
                args.input,
                args.output,
                settings=recorded,
                part_rows=args.part_rows or DEFAULT_PART_ROWS,
                overwrite=args.overwrite,
            )
        except (ValueError, OSError) as exc:
            raise CLIError(str(exc)) from None
        show = sys.stderr.isatty() if args.progress is None else args.progress
        progress = _Progress(job.plan.rows, done=job.rows_done, enabled=show)
        use_ray = args.workers > 1 or args.ray_address is not None
        try:
            if use_ray:
                rows = self._run_on_ray(job, rerank_options, args, progress)
            else:
                from ..batch import BatchScorer, run_in_process

                scorer = BatchScorer(**rerank_options)
                try:
                    rows = run_in_process(job, scorer, batch_size=args.batch_size, on_progress=progress.update)
                finally:
                    scorer.close()
        finally:
            progress.close()
        print(f"{rows} rows written to {args.output}", file=sys.stderr)
        return EXIT_OK

    @staticmethod
    def _run_on_ray(job: Any, rerank_options: dict[str, Any], args: argparse.Namespace, progress: _Progress) -> int:
        from ..ray import connect, disconnect, run_on_ray
        from ..settings import ENV_API_KEY

        # The key does not travel in the workers' arguments (Ray logs and stores those): the
        # workers read it from the environment (a local Ray's workers inherit this one's).
        key = rerank_options["engine_options"].pop("api_key", None)
        if key is not None:
            os.environ[ENV_API_KEY] = key
        started = connect(
            args.ray_address, workers=args.workers, cpus_per_worker=args.cpus_per_worker, quiet=not args.verbose
        )
        try:
            return run_on_ray(
                job,
                rerank_options,
                workers=args.workers,
                num_gpus=args.num_gpus_per_worker,
                num_cpus=args.cpus_per_worker,
                batch_size=args.batch_size,
                on_progress=progress.update,
            )
        finally:
            if started:
                disconnect()


class _Progress:
    """One line on stderr: rows done of the total, and the pairs per second of this run."""

    def __init__(self, total: int, *, done: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self.pairs = 0
        self.started = time.perf_counter()
        if enabled:
            self._draw()

    def update(self, rows: int, pairs: int) -> None:
        self.done += rows
        self.pairs += pairs
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        pct = 100 * self.done // max(self.total, 1)
        elapsed = time.perf_counter() - self.started
        rate = self.pairs / elapsed if elapsed > 0 else 0.0
        bar = "#" * (pct // 5) + "." * (20 - pct // 5)
        sys.stderr.write(f"\rbatch [{bar}] {self.done}/{self.total} rows ({pct}%) {rate:.1f} pairs/s {elapsed:.0f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
