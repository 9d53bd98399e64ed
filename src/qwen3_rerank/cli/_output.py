"""Writing rankings as they come: a table, JSON, JSON lines, a TREC run file or TSV.

Every format is written query by query (``--queries`` output streams: a consumer reads the
first query's results while the rest are scored). What the user gave comes back: a document's or
query's ``id`` and its other JSONL fields (under ``"fields"`` / ``"query_fields"``, so that a
field of the user's own named ``score`` or ``rank`` can never be mistaken for ours). A query
without results says so: an explicit record in JSON and JSON lines, a line in the table, and a
warning on stderr for TREC and TSV, whose rows cannot express "nothing".
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._base import CLIError
from ._inputs import Doc, Query

__all__ = ["FORMATS", "Writer", "check_ids", "format_table"]

FORMATS = ("table", "json", "jsonl", "trec", "tsv")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _dumps(value: Any, **kwargs: Any) -> str:
    """JSON that every line splitter reads back, line by line.

    ``allow_nan=False``: the output is always valid JSON (a NaN would need a reader's extension).
    ``ensure_ascii=False`` keeps text readable, but leaves NEL, U+2028 and U+2029 raw, where
    ``str.splitlines`` (and JavaScript before ES2019) would break a JSON line: they are escaped
    (they can only occur inside JSON strings, where the escape means the same character).
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, **kwargs)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


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
    if doc is not None and doc.fields:
        rec["fields"] = doc.fields
    return rec


def _empty_reason(q: Query) -> str:
    return "the query has no documents" if not q.documents else "every document was below --threshold"


def _query_record(q: Query, ranking: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"query": q.text}
    if q.id is not None:
        rec["id"] = q.id
    if q.fields:
        rec["fields"] = q.fields
    rec["results"] = [_result_record(rank, r, q.documents or []) for rank, r in enumerate(ranking, 1)]
    if not ranking:
        rec["empty"] = _empty_reason(q)
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


def format_table(
    query: str, ranking: Sequence[Any], docs: Sequence[Doc], *, width: int = 100, empty: str | None = None
) -> str:
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
        reason = empty or ("the query has no documents" if not docs else "every document was below --threshold")
        lines.append(f"  (no results: {reason})")
    stats = getattr(ranking, "stats", None)
    if stats is not None:
        lines.append(
            f"{len(ranking)} shown; {stats.pairs} sequences, {stats.tokens} tokens, "
            f"{stats.truncated} truncated, {stats.seconds:.2f} s ({stats.engine})"
        )
    return "\n".join(lines) + "\n"


def _run_id(value: Any, fallback: int) -> str:
    return str(fallback) if value is None else str(value)


def check_ids(queries: Sequence[Query], fmt: str) -> None:
    """For ``trec``/``tsv``: every query and document id must fit in one column (before a model loads).

    An id is the JSONL ``id`` (a string or a number), or the position when there is none. TREC run
    files separate columns by whitespace and TSV by tabs, so an id holding one would shift columns.
    """
    if fmt not in ("trec", "tsv"):
        return
    what = "whitespace" if fmt == "trec" else "a tab"
    for qi, q in enumerate(queries):
        items = [(q.id, f"query {qi}")] + [
            (d.id, f"document {di} of query {qi}") for di, d in enumerate(q.documents or [])
        ]
        for value, where in items:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise CLIError(
                    f"--format {fmt}: the id of {where} is a {type(value).__name__}; use a string or a number"
                )
            text = str(value)
            if not text or (any(c.isspace() for c in text) if fmt == "trec" else "\t" in text):
                raise CLIError(
                    f"--format {fmt}: the id of {where}, {value!r}, is empty or holds {what}, which would "
                    f"shift the columns; use ids without {what} or --format jsonl"
                )


class Writer:
    """Writes each query's ranking as soon as it is known, in one of :data:`FORMATS`.

    Args:
        fmt: One of :data:`FORMATS`.
        out: The stream (stdout).
        many: ``--queries`` was given (JSON: a list of query records instead of one record).
        width: The table's width.
        run_tag: The last column of a TREC run file.
    """

    def __init__(self, fmt: str, out: TextIO, *, many: bool, width: int = 100, run_tag: str = "qwen3-rerank") -> None:
        self.fmt, self.out, self.many, self.width, self.run_tag = fmt, out, many, width, run_tag
        self._written = 0

    def start(self) -> None:
        if self.fmt == "json" and self.many:
            self.out.write("[")

    def write(self, qi: int, q: Query, ranking: Any) -> None:
        """Write the ranking of query ``qi`` and flush, so that a reader sees it now."""
        docs = q.documents or []
        out = self.out
        if self.fmt == "json":
            text = _dumps(_query_record(q, ranking), indent=2)
            if self.many:
                text = ("," if self._written else "") + "\n" + "\n".join("  " + line for line in text.splitlines())
            out.write(text)
        elif self.fmt == "jsonl":
            head: dict[str, Any] = {"query_index": qi, "query": q.text}
            if q.id is not None:
                head["query_id"] = q.id
            if q.fields:
                head["query_fields"] = q.fields
            for rank, result in enumerate(ranking, 1):
                out.write(_dumps({**head, **_result_record(rank, result, docs)}) + "\n")
            if not ranking:
                empty = {"rank": None, "index": None, "score": None, "empty": _empty_reason(q)}
                out.write(_dumps({**head, **empty}) + "\n")
        elif self.fmt in ("trec", "tsv"):
            qid = _run_id(q.id, qi)
            for rank, r in enumerate(ranking, 1):
                doc = docs[r.index] if r.index < len(docs) else None
                did = _run_id(doc.id if doc is not None else None, r.index)
                if self.fmt == "trec":
                    out.write(f"{qid} Q0 {did} {rank} {r.score!r} {self.run_tag}\n")
                else:
                    out.write(f"{qid}\t{did}\t{rank}\t{r.score!r}\n")
            if not ranking:
                print(f"qwen3-rerank: warning: query {qi} ({qid}): no results, {_empty_reason(q)}", file=sys.stderr)
        else:
            if self._written:
                out.write("\n")
            reason = None if ranking else _empty_reason(q)
            out.write(format_table(q.text, ranking, docs, width=self.width, empty=reason))
        self._written += 1
        out.flush()

    def end(self) -> None:
        if self.fmt == "json" and self.many:
            self.out.write("\n]\n" if self._written else "]\n")
        elif self.fmt == "json":
            self.out.write("\n")
        self.out.flush()
