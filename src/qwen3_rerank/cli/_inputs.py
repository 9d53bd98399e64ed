"""Reading documents and queries: JSONL or one per line, from a file or stdin, with one-line errors.

Everything read is checked here, before a model loads: a JSONL line must be standard JSON
(``NaN``, ``Infinity`` and numbers too large for a float are refused, so that an ``id`` is always
written back as valid JSON) and a text must be valid Unicode (a lone surrogate such as the one a
broken ``"\\ud800"`` escape makes is refused, naming the file and line).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .._tokenizer import find_invalid_text
from ._base import CLIError

__all__ = ["Doc", "Query", "check_text", "read_documents", "read_queries"]


@dataclass
class Doc:
    """A document, its optional ``id`` and its other JSONL fields (all echoed in the output)."""

    text: str
    id: Any = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Query:
    """A query, its optional ``id``, its other JSONL fields and, from a JSONL queries file, its own documents."""

    text: str
    id: Any = None
    documents: list[Doc] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


MAX_INPUT_BYTES = 1 << 30
"""Most bytes read from one input (a file or stdin): a larger or endless one (``/dev/zero``) is
refused with a clear error instead of filling the memory."""


def _split_lines(text: str) -> list[str]:
    """Split at ``\n`` (and ``\r\n``) only.

    ``str.splitlines`` also breaks at form feed (``pdftotext`` puts one between pages), vertical
    tab, ``\x1c``-``\x1e``, NEL, U+2028, U+2029 and a lone ``\r``: a document holding one would
    become two and shift every later index. Those characters stay inside the line.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _too_large(what: str, source: str) -> CLIError:
    return CLIError(
        f"{source} holds more than {MAX_INPUT_BYTES:,} bytes of {what} (or never ends, like /dev/zero): "
        "split it into smaller files, or pass a regular file"
    )


def _read_bounded(stream: Any, what: str, source: str) -> bytes | str:
    """At most :data:`MAX_INPUT_BYTES` from ``stream`` (bytes, or characters of a text stream)."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(what, source)
    return data  # type: ignore[no-any-return]


def _open_text(path: str, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline) of a file or of stdin ('-')."""
    if path == "-":
        stream: TextIO = sys.stdin
        binary = getattr(stream, "buffer", None)  # a text stream without one: tests, embedding
        try:
            data = _read_bounded(binary if binary is not None else stream, what, "stdin")
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise CLIError(f"cannot read {what} from stdin: not UTF-8 text ({exc.reason})") from None
        yield from enumerate(_split_lines(text), 1)
        return
    name = path
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = _read_bounded(f, what, f"{what} file {name!r}")
        assert isinstance(raw, bytes)
        text = raw.decode("utf-8-sig")
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
    yield from enumerate(_split_lines(text), 1)


def _is_jsonl(path: str, lines: list[tuple[int, str]], fmt: str) -> bool:
    if fmt != "auto":
        return fmt == "jsonl"
    if path.lower().endswith((".jsonl", ".ndjson")):
        return True
    for _, line in lines:
        if line.strip():
            return line.lstrip().startswith("{")
    return False


class _NotStandardJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotStandardJSON(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStandardJSON(f"the number {text} is too large for a float")
    return value


def _parse_json_line(line: str, where: str) -> Any:
    try:
        return json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise CLIError(f"{where}: the JSON is nested too deeply") from None
    except _NotStandardJSON as exc:
        raise CLIError(f"{where}: {exc} (use a string or a finite number)") from None


_JSON_ESCAPE = "often a broken \\u escape in JSON such as \\ud800 without its pair"


def check_text(text: str, what: str, *, cause: str = _JSON_ESCAPE) -> None:
    """Refuse a text holding a lone surrogate (invalid Unicode no tokenizer can encode)."""
    found = find_invalid_text([text])
    if found is not None:
        position = found[1]
        raise CLIError(
            f"{what} contains a lone surrogate {text[position]!r} at character {position} (invalid Unicode, "
            f"{cause}); fix or remove it"
        )


def _check_id(value: Any, where: str) -> None:
    if isinstance(value, str):
        check_text(value, f"{where}: the id")


def _other_fields(value: dict[str, Any], known: tuple[str, ...], where: str) -> dict[str, Any]:
    """The object's fields but ``known``, checked for lone surrogates (they are written back)."""
    fields = {k: v for k, v in value.items() if k not in known}
    stack: list[Any] = [fields]
    while stack:  # iterative: json.loads allows nesting deeper than a recursive walk would
        item = stack.pop()
        if isinstance(item, str):
            check_text(item, f"{where}: a field")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return fields


def _doc_from_value(value: Any, where: str) -> Doc:
    if isinstance(value, str):
        check_text(value, f"{where}: the document text")
        return Doc(value)
    if isinstance(value, dict):
        text = value.get("text")
        if not isinstance(text, str):
            got = "missing" if "text" not in value else f"a {type(text).__name__}"
            raise CLIError(f'{where}: each document needs a "text" field holding a string ({got})')
        check_text(text, f"{where}: the document text")
        _check_id(value.get("id"), where)
        return Doc(text, value.get("id"), _other_fields(value, ("text", "id"), where))
    raise CLIError(
        f'{where}: a document must be a JSON object with a "text" field or a string, got {type(value).__name__}'
    )


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
        for number, line in lines:
            if line.strip():
                check_text(line, f"{name}, line {number}: the document text")
                docs.append(Doc(line))
    if not docs:
        raise CLIError(
            f'no documents in {name}: give a JSONL file with a "text" field per line, or one document per line'
        )
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
                check_text(value, f"{where}: the query")
                queries.append(Query(value))
                continue
            if not isinstance(value, dict):
                raise CLIError(
                    f'{where}: a query must be a JSON object with a "query" field, got {type(value).__name__}'
                )
            text = value.get("query", value.get("text"))
            if not isinstance(text, str):
                raise CLIError(f'{where}: each query needs a "query" field holding a string')
            check_text(text, f"{where}: the query")
            _check_id(value.get("id"), where)
            docs = value.get("documents")
            parsed = None
            if docs is not None:
                if not isinstance(docs, list):
                    raise CLIError(f'{where}: "documents" must be a list of strings or objects with "text"')
                parsed = [_doc_from_value(d, where) for d in docs]
            fields = _other_fields(value, ("query", "text", "id", "documents"), where)
            queries.append(Query(text, value.get("id"), parsed, fields))
    else:
        for number, line in lines:
            if line.strip():
                check_text(line, f"{name}, line {number}: the query")
                queries.append(Query(line))
    if not queries:
        raise CLIError(f'no queries in {name}: give one query per line, or JSONL with a "query" field')
    return queries
