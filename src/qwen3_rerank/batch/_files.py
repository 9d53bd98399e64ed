"""Parquet, JSONL and CSV files read in parts and written in a stream (pyarrow), never whole.

:func:`plan_input` streams over the input once to find its rows and where each *part* (a run of
consecutive rows) begins: Parquet from its footer, JSONL and CSV by scanning the bytes for record
ends (a CSV record ends at a newline outside quotes). :func:`read_part` then reads one part on
its own, so a batch job holds one part at a time, and the parts can be read by different
processes (Ray workers) in any order. The column types of a JSONL or CSV file are inferred once,
from its first part, and imposed on every part, so that all parts share one schema.

:func:`write_output` streams finished parts (Parquet files) into the output file of any format.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "InputPlan", "Part", "file_format", "plan_input", "read_part", "write_output"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
"""File extensions and the format each one means."""

_SCAN_BUFFER = 1 << 20


def file_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"``, ``"jsonl"`` or ``"csv"``, from the file's extension."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))}"
        ) from None


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        from .._exceptions import MissingDependencyError

        raise MissingDependencyError(
            "batch files need pyarrow: pip install 'qwen3-rerank[batch]' (or '[ray]')"
        ) from exc
    return pyarrow


@dataclass(frozen=True, slots=True)
class Part:
    """Rows ``start`` to ``stop`` (exclusive) of the input; for JSONL and CSV, also their bytes."""

    index: int
    start: int
    stop: int
    byte_start: int = 0
    byte_stop: int = 0

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class InputPlan:
    """An input file cut into parts: what :func:`read_part` needs (picklable: it travels to workers)."""

    path: str
    format: str
    rows: int
    parts: tuple[Part, ...]
    schema: Any
    """The ``pyarrow.Schema`` every part is read with."""
    header: bytes = b""
    """CSV: the header record, prepended to each part's bytes."""


def plan_input(path: str | os.PathLike[str], part_rows: int) -> InputPlan:
    """Cut ``path`` into parts of ``part_rows`` rows (the last may be shorter); streams the file once.

    Raises:
        ValueError: an unknown extension, an empty CSV, or no rows at all.
        OSError: the file cannot be read.
    """
    if part_rows < 1:
        raise ValueError(f"part_rows must be a positive integer, got {part_rows!r}")
    _pyarrow()
    fmt = file_format(path)
    path = os.fspath(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        rows = meta.metadata.num_rows
        if rows == 0:
            raise ValueError(f"{path!r} has no rows to score")
        parts = tuple(
            Part(index=i, start=s, stop=min(s + part_rows, rows)) for i, s in enumerate(range(0, rows, part_rows))
        )
        return InputPlan(path=path, format=fmt, rows=rows, parts=parts, schema=meta.schema_arrow)
    header, ends = _record_ends(path, csv=fmt == "csv")
    parts_list: list[Part] = []
    start_byte = len(header)
    for i, first in enumerate(range(0, len(ends), part_rows)):
        last = min(first + part_rows, len(ends))
        parts_list.append(Part(index=i, start=first, stop=last, byte_start=start_byte, byte_stop=ends[last - 1]))
        start_byte = ends[last - 1]
    if not parts_list:
        raise ValueError(f"{path!r} has no rows to score")
    plan = InputPlan(path=path, format=fmt, rows=len(ends), parts=tuple(parts_list), schema=None, header=header)
    schema = read_part(plan, plan.parts[0]).schema
    return InputPlan(path=path, format=fmt, rows=plan.rows, parts=plan.parts, schema=schema, header=header)


def _record_ends(path: str, *, csv: bool) -> tuple[bytes, list[int]]:
    """The header (CSV) and the byte offset just past each non-blank record.

    A JSON line cannot hold a raw newline; a CSV record can, inside quotes, so a CSV newline ends
    a record only when the quotes before it are balanced (RFC 4180 escapes a quote as ``""``,
    which keeps the count even).
    """
    ends: list[int] = []
    header = b""
    offset = 0
    in_quotes = False
    blank = True
    with open(path, "rb", buffering=_SCAN_BUFFER) as f:
        for line in f:
            offset += len(line)
            if csv and line.count(b'"') % 2:
                in_quotes = not in_quotes
            if blank and line.strip():
                blank = False
            if in_quotes:
                continue  # a quoted CSV value continues on the next line
            if not blank:
                if csv and not header:
                    header = _with_newline(_read_range(path, 0, offset))
                else:
                    ends.append(offset)
            blank = True
    if csv and not header:
        raise ValueError(f"{path!r} is empty: a CSV input needs a header line naming its columns")
    return header, ends


def _with_newline(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _read_range(path: str, start: int, stop: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(stop - start)


def read_part(plan: InputPlan, part: Part) -> Any:
    """Read one part of the input as a ``pyarrow.Table`` with the plan's schema.

    Raises:
        ValueError: the part's rows do not parse with the plan's column types (named), or the file
            changed since it was planned.
    """
    pa = _pyarrow()
    if plan.format == "parquet":
        table = _parquet_rows(plan.path, part.start, part.stop)
    else:
        data = _read_range(plan.path, part.byte_start, part.byte_stop)
        try:
            table = _parse_text(plan, data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            where = f"rows {part.start + 1}-{part.stop} of {plan.path!r}"
            raise ValueError(
                f"{where} do not parse with the column types read from its first rows ({exc}); "
                "make the column's values one type in the whole file, or convert the file to Parquet"
            ) from exc
    if table.num_rows != part.rows:
        raise ValueError(
            f"{plan.path!r} changed while it was read: part {part.index} has {table.num_rows} rows, "
            f"{part.rows} expected; run the job again on a file that is not being written"
        )
    return table


def _parse_text(plan: InputPlan, data: bytes) -> Any:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    block = max(len(data) + len(plan.header) + 1, 1 << 16)
    if plan.format == "jsonl":
        parse = pjson.ParseOptions(
            explicit_schema=plan.schema, unexpected_field_behavior="error" if plan.schema is not None else "infer"
        )
        return pjson.read_json(io.BytesIO(data), read_options=pjson.ReadOptions(block_size=block), parse_options=parse)
    convert = pcsv.ConvertOptions(column_types=plan.schema) if plan.schema is not None else None
    return pcsv.read_csv(
        io.BytesIO(plan.header + data),
        read_options=pcsv.ReadOptions(block_size=block),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=convert,
    )


def _parquet_rows(path: str, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    groups: list[int] = []
    first = 0  # the first row of the first selected group
    offset = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > start and offset < stop:
            if not groups:
                first = offset
            groups.append(g)
        offset += n
    batches: list[Any] = []
    row = first
    for batch in pf.iter_batches(batch_size=65536, row_groups=groups):
        lo, hi = max(start - row, 0), min(stop - row, batch.num_rows)
        if hi > lo:
            batches.append(batch.slice(lo, hi - lo))
        row += batch.num_rows
        if row >= stop:
            break
    return pa.Table.from_batches(batches, schema=pf.schema_arrow)


# -- output ------------------------------------------------------------------------------------
def write_output(parts: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str]) -> int:
    """Stream the Parquet ``parts``, in order, into ``path`` (its format by extension); rows written.

    Written to a temporary name beside ``path`` and renamed when complete, so ``path`` is never
    left half written.
    """
    _pyarrow()
    fmt = file_format(path)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        rows = _write(fmt, _batches(parts), tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _batches(parts: Iterable[str | os.PathLike[str]]) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for part in parts:
        yield from pq.ParquetFile(part).iter_batches(batch_size=8192)


def _write(fmt: str, batches: Iterator[Any], tmp: Path) -> int:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = 0
    writer: Any = None
    with open(tmp, "wb") as f:
        try:
            for batch in batches:
                rows += batch.num_rows
                if fmt == "jsonl":
                    for record in batch.to_pylist():
                        f.write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
                    continue
                if fmt == "csv":
                    batch = _csv_cells(batch)
                if writer is None:
                    writer = (pq.ParquetWriter if fmt == "parquet" else pcsv.CSVWriter)(f, batch.schema)
                writer.write_batch(batch) if fmt == "csv" else writer.write_table(pa.Table.from_batches([batch]))
        finally:
            if writer is not None:
                writer.close()
    return rows


def _csv_cells(batch: Any) -> Any:
    """CSV has no lists or structs: such columns become JSON text (what ``layout='lists'`` reads back)."""
    import pyarrow as pa

    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_nested(field.type):
            text = [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()]
            columns.append(pa.array(text, pa.string()))
        else:
            columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
