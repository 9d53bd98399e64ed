"""``qwen3-rerank rerank``: score documents against one query or many and print them best first."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import Any

from . import _engine, _output
from ._base import EXIT_OK, CLIError, CLISubcommand, non_negative_int, positive_int, probability
from ._inputs import Query, check_text, read_documents, read_queries
from ._output import format_table

__all__ = ["RerankCommand", "format_table"]

# Show a progress indicator (when stderr is a terminal) once the input is at least this large.
PROGRESS_MIN_QUERIES = 8
PROGRESS_MIN_PAIRS = 2000


class RerankCommand(CLISubcommand):
    name = "rerank"
    help = "rank documents for a query"
    description = (
        "Score documents against a query and print them best first. Documents: a JSONL file with a "
        "'text' field per line, or a text file with one document per line, or '-' for stdin."
    )

    def add_arguments(self, r: argparse.ArgumentParser) -> None:
        r.add_argument("query", nargs="?", default=None, help="the search query (or use --queries)")
        r.add_argument(
            "--docs",
            "-d",
            default=None,
            metavar="FILE",
            help="documents: JSONL ('text' field) or one per line; '-' = stdin",
        )
        r.add_argument(
            "--docs-format",
            choices=("auto", "jsonl", "lines"),
            default="auto",
            help="auto (default): JSONL when the first line starts with '{' or the file ends in .jsonl",
        )
        r.add_argument(
            "--queries",
            "-q",
            default=None,
            metavar="FILE",
            help="many queries: one per line, or JSONL with 'query' and optionally its own 'documents'",
        )
        r.add_argument(
            "--instruction", "-i", default=None, help="task instruction (default: the model card's web-search one)"
        )
        r.add_argument("--top-n", "-n", type=positive_int, default=None, help="print only the best N per query")
        r.add_argument("--threshold", type=probability, default=None, help="drop results with score below this")
        r.add_argument(
            "--long-documents",
            choices=("truncate", "window"),
            default="truncate",
            help="truncate (default): cut what does not fit; window: score overlapping windows, keep the best",
        )
        r.add_argument(
            "--window-overlap",
            type=non_negative_int,
            default=64,
            help="tokens shared by consecutive windows (default 64)",
        )
        r.add_argument(
            "--chunk-size",
            type=positive_int,
            default=1024,
            help="documents sent to the engine per call (default 1024); a query with more is scored in "
            "several calls, and progress moves by pairs",
        )
        out = r.add_mutually_exclusive_group()
        out.add_argument(
            "--format",
            "-f",
            choices=_output.FORMATS,
            default=None,
            help="table (default), json, jsonl, trec (a TREC run file: qid Q0 docid rank score tag) "
            "or tsv (qid, docid, rank, score); ids are the JSONL 'id's, or positions",
        )
        out.add_argument("--json", action="store_true", help="print one JSON document (= --format json)")
        out.add_argument("--jsonl", action="store_true", help="print one JSON line per result (= --format jsonl)")
        r.add_argument("--run-tag", default="qwen3-rerank", help="the last column of --format trec")
        prog = r.add_mutually_exclusive_group()
        prog.add_argument(
            "--progress", dest="progress", action="store_true", default=None, help="always show progress on stderr"
        )
        prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
        _engine.add_engine_arguments(r)

    def run(self, args: argparse.Namespace) -> int:
        if args.query is None and args.queries is None:
            raise CLIError("give a QUERY, or --queries FILE for many queries (see 'qwen3-rerank rerank --help')")
        if args.query is not None and args.queries is not None:
            raise CLIError("give either a QUERY or --queries FILE, not both")
        if args.docs == "-" and args.queries == "-":
            raise CLIError("--docs and --queries cannot both read stdin")
        if args.query is not None and not args.query.strip():
            raise CLIError("the query is empty: pass the search text as QUERY")
        # Bytes that are not UTF-8 on the command line arrive as lone surrogates.
        for text, what in ((args.query, "QUERY"), (args.instruction, "--instruction")):
            if text is not None:
                check_text(text, what, cause="bytes that are not UTF-8 on the command line")

        fmt = _output_format(args)
        if any(c.isspace() for c in args.run_tag) or not args.run_tag:
            raise CLIError(f"--run-tag {args.run_tag!r}: a TREC run tag is one word (no whitespace)")
        _engine.engine_kwargs(args)  # bad engine options fail before the input is read (stdin too)
        shared = read_documents(args.docs, args.docs_format) if args.docs is not None else None
        queries = read_queries(args.queries) if args.queries is not None else [Query(args.query)]
        for n, q in enumerate(queries, 1):
            if q.documents is None:
                if shared is None:
                    raise CLIError(
                        "no documents: pass --docs FILE (or '-' for stdin)"
                        if args.queries is None
                        else f'query {n} has no "documents" of its own and no --docs FILE was given'
                    )
                q.documents = shared

        _output.check_ids(queries, fmt)

        from .._reranker import Reranker

        width = shutil.get_terminal_size((100, 24)).columns
        writer = _output.Writer(fmt, sys.stdout, many=args.queries is not None, width=width, run_tag=args.run_tag)
        engine = _engine.build_engine(args)
        try:
            options: dict[str, Any] = {"long_documents": args.long_documents, "window_overlap": args.window_overlap}
            if args.max_length is not None:
                options["max_length"] = args.max_length
            reranker = Reranker(engine, instruction=args.instruction, **options)
            writer.start()
            _rerank_all(reranker, queries, args, writer.write)
            writer.end()
        finally:
            engine.close()
        return EXIT_OK


def _output_format(args: argparse.Namespace) -> str:
    if args.json:
        return "json"
    if args.jsonl:
        return "jsonl"
    return str(args.format or "table")


Emit = Callable[[int, Query, Any], None]


def _rerank_all(reranker: Any, queries: list[Query], args: argparse.Namespace, emit: Emit) -> None:
    """Score every query, chunk by chunk, and hand each query's ranking to ``emit`` as soon as it is known."""
    total_pairs = sum(len(q.documents or []) for q in queries)
    show = args.progress
    if show is None:
        show = sys.stderr.isatty() and (len(queries) >= PROGRESS_MIN_QUERIES or total_pairs >= PROGRESS_MIN_PAIRS)
    options = {"top_n": args.top_n, "score_threshold": args.threshold}
    jobs = list(_jobs(queries, args.chunk_size))
    with _progress(total_pairs, enabled=bool(show)) as progress:
        if reranker.engine.uses_server:
            # Over HTTP, the async path: Ctrl-C cancels the requests in flight (exit 130 at once)
            # where the sync path would wait for their answers, up to the engine's timeout.
            import asyncio

            asyncio.run(_arerank_jobs(reranker, queries, jobs, options, progress, emit))
        else:
            merger = _Merger(queries, options, emit)
            for job in jobs:
                call = merger.call(job)
                merger.add(job, reranker.rerank_many(*_texts(queries, job), **call))
                progress.update(sum(end - start for _, start, end in job))


async def _arerank_jobs(
    reranker: Any, queries: list[Query], jobs: list[Job], options: dict[str, Any], progress: Any, emit: Emit
) -> None:
    try:
        merger = _Merger(queries, options, emit)
        for job in jobs:
            call = merger.call(job)
            merger.add(job, await reranker.arerank_many(*_texts(queries, job), **call))
            progress.update(sum(end - start for _, start, end in job))
    finally:
        await reranker.engine.aclose()  # its async client belongs to this event loop


Job = list[tuple[int, int, int]]
"""One engine call: (query index, first document, end) per query part it scores."""


def _texts(queries: list[Query], job: Job) -> tuple[list[str], list[list[str]]]:
    return [queries[qi].text for qi, _, _ in job], [
        [d.text for d in (queries[qi].documents or [])[start:end]] for qi, start, end in job
    ]


def _jobs(queries: list[Query], max_docs: int) -> Iterator[Job]:
    """Engine calls of about ``max_docs`` documents each.

    Consecutive queries share a call while they fit; a query with more than ``max_docs``
    documents is split into calls of ``max_docs`` (so that progress moves, and memory stays
    bounded, for one query with many documents). A query with no documents gets a call of its
    own part (which calls no engine) so that its empty result is written in its turn.
    """
    chunk: Job = []
    docs = 0
    for qi, q in enumerate(queries):
        n = len(q.documents or [])
        if n > max_docs:
            if chunk:
                yield chunk
                chunk, docs = [], 0
            for start in range(0, n, max_docs):
                yield [(qi, start, min(start + max_docs, n))]
            continue
        if chunk and docs + n > max_docs:
            yield chunk
            chunk, docs = [], 0
        chunk.append((qi, 0, n))
        docs += n
    if chunk:
        yield chunk


class _Merger:
    """Turns the engine calls' rankings into one ranking per query, emitted in query order.

    A query split over several calls is scored without ``top_n`` / ``score_threshold`` and its
    parts merged here: the results sorted by log-odds (stable, so ties keep input order, as the
    core sorts), then the threshold and ``top_n`` applied, and the stats summed.
    """

    def __init__(self, queries: list[Query], options: dict[str, Any], emit: Emit) -> None:
        self.queries, self.options, self.emit = queries, options, emit
        self._parts: list[Any] = []

    def call(self, job: Job) -> dict[str, Any]:
        """The keyword arguments for the call of ``job``."""
        qi, start, end = job[0]
        split = len(job) == 1 and (start > 0 or end < len(self.queries[qi].documents or []))
        return {"top_n": None, "score_threshold": None} if split else self.options

    def add(self, job: Job, rankings: list[Any]) -> None:
        for (qi, start, end), ranking in zip(job, rankings, strict=True):
            total = len(self.queries[qi].documents or [])
            if start == 0 and end == total:
                self.emit(qi, self.queries[qi], ranking)
                continue
            self._parts.append(([dataclasses.replace(r, index=r.index + start) for r in ranking], ranking.stats))
            if end == total:
                self._emit_merged(qi)

    def _emit_merged(self, qi: int) -> None:
        from .._types import Ranking, RerankStats

        results = sorted((r for part, _ in self._parts for r in part), key=lambda r: -r.logit)
        threshold, top_n = self.options["score_threshold"], self.options["top_n"]
        if threshold is not None:
            results = [r for r in results if r.score >= threshold]
        if top_n is not None:
            results = results[:top_n]
        stats = [s for _, s in self._parts]
        merged = RerankStats(
            pairs=sum(s.pairs for s in stats),
            tokens=sum(s.tokens for s in stats),
            truncated=sum(s.truncated for s in stats),
            seconds=sum(s.seconds for s in stats),
            engine=stats[0].engine,
            query_truncated=any(s.query_truncated for s in stats),
            instruction_truncated=any(s.instruction_truncated for s in stats),
            duplicates=sum(s.duplicates for s in stats),
        )
        self._parts = []
        self.emit(qi, self.queries[qi], Ranking(results, merged))


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Any]:
    """A tqdm bar of scored pairs on stderr (tqdm comes with huggingface-hub, a core dependency)."""
    if not enabled:
        yield _NoProgress()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=" pairs", file=sys.stderr, desc="reranking", leave=True) as bar:
        yield bar


class _NoProgress:
    def update(self, n: int) -> None:
        pass
