"""``qwen3-rerank rerank``: score documents against one query or many and print them best first."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from . import _engine
from ._base import EXIT_OK, CLIError, CLISubcommand, non_negative_int, positive_int, probability
from ._inputs import Doc, Query, check_text, read_documents, read_queries

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
            help="documents sent to the engine per call with --queries (default 1024)",
        )
        out = r.add_mutually_exclusive_group()
        out.add_argument("--json", action="store_true", help="print one JSON document")
        out.add_argument("--jsonl", action="store_true", help="print one JSON line per result")
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

        _engine.engine_kwargs(args)  # bad engine options fail before the input is read (stdin too)
        shared = read_documents(args.docs, args.docs_format) if args.docs is not None else None
        queries = read_queries(args.queries) if args.queries is not None else [Query(args.query)]
        for n, q in enumerate(queries, 1):
            if q.documents is None:
                if shared is None:
                    raise CLIError(
                        "no documents: pass --docs FILE (or '-' for stdin)"
                        if args.queries is None
                        else f"query {n} has no \"documents\" of its own and no --docs FILE was given"
                    )
                q.documents = shared

        from .._reranker import Reranker

        engine = _engine.build_engine(args)
        try:
            options: dict[str, Any] = {"long_documents": args.long_documents, "window_overlap": args.window_overlap}
            if args.max_length is not None:
                options["max_length"] = args.max_length
            reranker = Reranker(engine, instruction=args.instruction, **options)
            rankings = _rerank_all(reranker, queries, args)
        finally:
            engine.close()

        out = sys.stdout
        if args.json:
            records = [_query_record(q, r) for q, r in zip(queries, rankings, strict=True)]
            json.dump(records[0] if args.queries is None else records, out, ensure_ascii=False, indent=2)
            out.write("\n")
        elif args.jsonl:
            for qi, (q, ranking) in enumerate(zip(queries, rankings, strict=True)):
                for rank, result in enumerate(ranking, 1):
                    rec = {"query_index": qi, "query": q.text}
                    if q.id is not None:
                        rec["query_id"] = q.id
                    rec.update(_result_record(rank, result, q.documents or []))
                    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            width = shutil.get_terminal_size((100, 24)).columns
            for qi, (q, ranking) in enumerate(zip(queries, rankings, strict=True)):
                if qi:
                    out.write("\n")
                out.write(format_table(q.text, ranking, q.documents or [], width=width))
        out.flush()
        return EXIT_OK


def _rerank_all(reranker: Any, queries: list[Query], args: argparse.Namespace) -> list[Any]:
    total_pairs = sum(len(q.documents or []) for q in queries)
    show = args.progress
    if show is None:
        show = sys.stderr.isatty() and (len(queries) >= PROGRESS_MIN_QUERIES or total_pairs >= PROGRESS_MIN_PAIRS)
    kwargs = {"top_n": args.top_n, "score_threshold": args.threshold}
    rankings: list[Any] = []
    with _Progress(len(queries), enabled=bool(show and len(queries) > 1), unit="queries") as progress:
        if reranker.engine.uses_server:
            # Over HTTP, the async path: Ctrl-C cancels the requests in flight (exit 130 at once)
            # where the sync path would wait for their answers, up to the engine's timeout.
            import asyncio

            asyncio.run(_arerank_chunks(reranker, queries, args.chunk_size, kwargs, progress, rankings))
        else:
            for chunk in _chunks(queries, args.chunk_size):
                rankings.extend(reranker.rerank_many(*_texts(chunk), **kwargs))
                progress.update(len(chunk))
    return rankings


async def _arerank_chunks(
    reranker: Any,
    queries: list[Query],
    chunk_size: int,
    kwargs: dict[str, Any],
    progress: _Progress,
    rankings: list[Any],
) -> None:
    try:
        for chunk in _chunks(queries, chunk_size):
            rankings.extend(await reranker.arerank_many(*_texts(chunk), **kwargs))
            progress.update(len(chunk))
    finally:
        await reranker.engine.aclose()  # its async client belongs to this event loop


def _texts(chunk: list[Query]) -> tuple[list[str], list[list[str]]]:
    return [q.text for q in chunk], [[d.text for d in q.documents or []] for q in chunk]


def _chunks(queries: list[Query], max_docs: int) -> Iterator[list[Query]]:
    """Consecutive groups of queries holding about ``max_docs`` documents (at least one query)."""
    chunk: list[Query] = []
    docs = 0
    for q in queries:
        n = len(q.documents or [])
        if chunk and docs + n > max_docs:
            yield chunk
            chunk, docs = [], 0
        chunk.append(q)
        docs += n
    if chunk:
        yield chunk


class _Progress:
    """A progress indicator on stderr: tqdm when it is installed, a one-line counter otherwise."""

    def __init__(self, total: int, *, enabled: bool, unit: str) -> None:
        self.total, self.enabled, self.unit, self.done = total, enabled, unit, 0
        self._bar: Any = None
        self._started = time.perf_counter()
        if enabled and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=f" {unit}", file=sys.stderr, desc="reranking", leave=True)

    def __enter__(self) -> _Progress:
        if self.enabled and self._bar is None:
            self._draw()
        return self

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._draw()

    def _draw(self) -> None:
        pct = 100 * self.done // max(self.total, 1)
        bar = "#" * (pct // 5) + "." * (20 - pct // 5)
        elapsed = time.perf_counter() - self._started
        sys.stderr.write(f"\rreranking [{bar}] {self.done}/{self.total} {self.unit} ({pct}%) {elapsed:.1f}s")
        sys.stderr.flush()

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _result_record(rank: int, result: Any, docs: Sequence[Doc]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "rank": rank,
        "index": result.index,
        "score": result.score,
        "logit": _finite(result.logit),
        "truncated": result.truncated,
        "num_tokens": result.num_tokens,
        "window": result.window,
        "num_windows": result.num_windows,
    }
    doc = docs[result.index] if result.index < len(docs) else None
    if doc is not None and doc.id is not None:
        rec["id"] = doc.id
    rec["text"] = result.document
    return rec


def _query_record(q: Query, ranking: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"query": q.text}
    if q.id is not None:
        rec["id"] = q.id
    rec["results"] = [_result_record(rank, r, q.documents or []) for rank, r in enumerate(ranking, 1)]
    s = ranking.stats
    rec["stats"] = {
        "pairs": s.pairs,
        "tokens": s.tokens,
        "truncated": s.truncated,
        "seconds": round(s.seconds, 4),
        "engine": s.engine,
    }
    return rec


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[: max(width - 1, 0)] + "…"


def format_table(query: str, ranking: Sequence[Any], docs: Sequence[Doc], *, width: int = 100) -> str:
    """A ranked table for people: rank, score, input index, notes and the start of the text."""
    lines = [f"Query: {_one_line(query, max(width - 7, 20))}"]
    header = f"{'rank':>4}  {'score':>7}  {'index':>5}  document"
    lines.append(header)
    lines.append("-" * min(width, max(len(header), 40)))
    room = max(width - 24, 20)
    for rank, r in enumerate(ranking, 1):
        note = ""
        if r.truncated:
            note = "[truncated] "
        elif r.num_windows > 1:
            note = f"[window {r.window + 1}/{r.num_windows}] "
        doc = docs[r.index] if r.index < len(docs) else None
        if doc is not None and doc.id is not None:
            note = f"[{doc.id}] " + note
        lines.append(f"{rank:>4}  {r.score:>7.4f}  {r.index:>5}  {_one_line(note + r.document, room)}")
    if not ranking:
        lines.append("  (no results: every document was below --threshold)")
    stats = getattr(ranking, "stats", None)
    if stats is not None:
        lines.append(
            f"{len(ranking)} shown; {stats.pairs} sequences, {stats.tokens} tokens, "
            f"{stats.truncated} truncated, {stats.seconds:.2f} s ({stats.engine})"
        )
    return "\n".join(lines) + "\n"

