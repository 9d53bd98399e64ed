"""Reading documents and queries: JSONL or one per line, from a file or stdin, with one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ._base import CLIError

__all__ = ["Doc", "Query", "read_documents", "read_queries"]


@dataclass
class Doc:
    """A document and its optional ``id`` (echoed in the output)."""

    text: str
    id: Any = None


@dataclass
class Query:
    """A query, its optional ``id`` and, from a JSONL queries file, its own documents."""

    text: str
    id: Any = None
    documents: list[Doc] | None = None


def _open_text(path: str, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline) of a file or of stdin ('-')."""
    if path == "-":
        stream: TextIO = sys.stdin
        try:
            lines = stream.read().splitlines()
        except UnicodeDecodeError as exc:
            raise CLIError(f"cannot read {what} from stdin: not UTF-8 text ({exc.reason})") from None
        yield from enumerate(lines, 1)
        return
    name = path
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CLIError(f"cannot read {what} file {name!r}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"cannot read {what} file {name!r}: it is a directory") from None
    except PermissionError:
        raise CLIError(f"cannot read {what} file {name!r}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"cannot read {what} file {name!r}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"cannot read {what} file {name!r}: {exc.strerror or exc}") from None
    yield from enumerate(text.splitlines(), 1)


def _is_jsonl(path: str, lines: list[tuple[int, str]], fmt: str) -> bool:
    if fmt != "auto":
        return fmt == "jsonl"
    if path.lower().endswith((".jsonl", ".ndjson")):
        return True
    for _, line in lines:
        if line.strip():
            return line.lstrip().startswith("{")
    return False


def _parse_json_line(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None


def _doc_from_value(value: Any, where: str) -> Doc:
    if isinstance(value, str):
        return Doc(value)
    if isinstance(value, dict):
        text = value.get("text")
        if not isinstance(text, str):
            got = "missing" if "text" not in value else f"a {type(text).__name__}"
            raise CLIError(f"{where}: each document needs a \"text\" field holding a string ({got})")
        return Doc(text, value.get("id"))
    raise CLIError(f"{where}: a document must be a JSON object with a \"text\" field or a string, got {type(value).__name__}")


def read_documents(path: str, fmt: str = "auto") -> list[Doc]:
    """Documents from a JSONL file (``text`` field) or a text file with one document per line."""
    name = "stdin" if path == "-" else path
    lines = list(_open_text(path, "documents"))
    docs: list[Doc] = []
    if _is_jsonl(path, lines, fmt):
        for number, line in lines:
            if line.strip():
                where = f"{name}, line {number}"
                docs.append(_doc_from_value(_parse_json_line(line, where), where))
    else:
        docs = [Doc(line) for _, line in lines if line.strip()]
    if not docs:
        raise CLIError(f"no documents in {name}: give a JSONL file with a \"text\" field per line, or one document per line")
    return docs


def read_queries(path: str, fmt: str = "auto") -> list[Query]:
    """Queries: one per line, or JSONL with ``query`` (and optionally ``documents``, ``id``)."""
    name = "stdin" if path == "-" else path
    lines = list(_open_text(path, "queries"))
    queries: list[Query] = []
    if _is_jsonl(path, lines, fmt):
        for number, line in lines:
            if not line.strip():
                continue
            where = f"{name}, line {number}"
            value = _parse_json_line(line, where)
            if isinstance(value, str):
                queries.append(Query(value))
                continue
            if not isinstance(value, dict):
                raise CLIError(f"{where}: a query must be a JSON object with a \"query\" field, got {type(value).__name__}")
            text = value.get("query", value.get("text"))
            if not isinstance(text, str):
                raise CLIError(f"{where}: each query needs a \"query\" field holding a string")
            docs = value.get("documents")
            parsed = None
            if docs is not None:
                if not isinstance(docs, list):
                    raise CLIError(f"{where}: \"documents\" must be a list of strings or objects with \"text\"")
                parsed = [_doc_from_value(d, where) for d in docs]
            queries.append(Query(text, value.get("id"), parsed))
    else:
        queries = [Query(line) for _, line in lines if line.strip()]
    if not queries:
        raise CLIError(f"no queries in {name}: give one query per line, or JSONL with a \"query\" field")
    return queries

