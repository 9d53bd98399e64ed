"""A resumable batch job: input parts in, one committed Parquet file per part, one output file out.

The input is cut into parts (:func:`~._files.plan_input`). Each scored part is written to
``OUTPUT.parts/part-NNNNNN.parquet`` under a temporary name and renamed, so a part is either
complete or absent, never half there. When every part is there they are streamed, in input
order, into ``OUTPUT`` and the parts folder is removed. A run that is interrupted and started
again with the same settings scores only the missing parts; ``manifest.json`` in the parts
folder records the settings, the input's size and modification time, and a run whose settings
differ is refused (:class:`ResumeMismatchError`). Whoever scores a part (this process, or Ray
workers) hands its rows to :meth:`BatchJob.commit`, which keeps each row exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import ConfigurationError
from ._files import InputPlan, Part, file_format, plan_input, read_part, write_output
from ._scorer import BatchScorer

__all__ = ["DEFAULT_PART_ROWS", "BatchJob", "ResumeMismatchError", "run_in_process"]

DEFAULT_PART_ROWS = 10_000
"""Rows per part: the unit of resume (an interrupted part is scored again)."""

MANIFEST_VERSION = 1
ROW_COLUMN = "__qwen3_rerank_row__"
"""The input row number (0-based), carried through the workers and dropped before writing."""

ProgressCallback = Callable[[int, int], None]
"""Called with ``(rows, pairs)`` each time a part is committed."""


class ResumeMismatchError(ConfigurationError):
    """The parts folder of an interrupted run was made with other settings or another input."""


@dataclass
class BatchJob:
    """The state of one ``INPUT -> OUTPUT`` job on disk (see the module docstring)."""

    plan: InputPlan
    output: Path
    settings: dict[str, Any]
    done: set[int] = field(default_factory=set)
    """Indices of the parts already committed."""

    @classmethod
    def open(
        cls,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        settings: Mapping[str, Any],
        part_rows: int = DEFAULT_PART_ROWS,
        overwrite: bool = False,
    ) -> BatchJob:
        """Plan the job, and resume the parts an earlier run with the same ``settings`` committed.

        Args:
            input: The input file (Parquet, JSONL or CSV, by extension).
            output: The output file (its format by extension).
            settings: Everything that changes the scores (engine, model, instruction, columns,
                ...), JSON-serialisable and without secrets: recorded, and compared on resume.
            part_rows: Rows per part.
            overwrite: Replace an existing ``output`` (otherwise it is an error).

        Raises:
            ResumeMismatchError: the parts folder was made with other settings or another input.
            ConfigurationError: ``output`` exists (and ``overwrite`` is false), or is ``input``.
        """
        src, dst = Path(input), Path(output)
        file_format(dst)  # an unknown output extension fails before the input is scanned
        if not src.is_file():
            raise ConfigurationError(f"no such input file: {os.fspath(src)!r}")
        if dst.resolve() == src.resolve():
            raise ConfigurationError("OUTPUT must be another file than INPUT")
        parts_dir = _parts_dir(dst)
        if dst.exists() and not parts_dir.exists() and not overwrite:
            raise ConfigurationError(f"{os.fspath(dst)!r} exists; pass --overwrite (overwrite=True) to replace it")
        settings = json.loads(json.dumps(dict(settings)))  # as the manifest will read back (tuples: lists)
        stat = src.stat()
        source = {"path": os.fspath(src.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        recorded = {"version": MANIFEST_VERSION, "input": source, "part_rows": part_rows, "settings": dict(settings)}
        manifest = parts_dir / "manifest.json"
        if manifest.exists():
            _check_same(json.loads(manifest.read_text(encoding="utf-8")), recorded, parts_dir)
        plan = plan_input(src, part_rows)
        parts_dir.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            _atomic_write(manifest, json.dumps(recorded, indent=2, sort_keys=True).encode())
        job = cls(plan=plan, output=dst, settings=dict(settings))
        for stale in parts_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # a part whose write was interrupted
        job.done = {p.index for p in plan.parts if job.part_path(p).exists()}
        return job

    @property
    def parts_dir(self) -> Path:
        return _parts_dir(self.output)

    @property
    def pending(self) -> list[Part]:
        """The parts still to score, in input order."""
        return [p for p in self.plan.parts if p.index not in self.done]

    @property
    def rows_done(self) -> int:
        return sum(p.rows for p in self.plan.parts if p.index in self.done)

    def part_path(self, part: Part) -> Path:
        return self.parts_dir / f"part-{part.index:06d}.parquet"

    def read(self, part: Part) -> Any:
        """The part's input rows with their row numbers (:data:`ROW_COLUMN`) appended."""
        return read_numbered(self.plan, part)

    def commit(self, part: Part, table: Any) -> None:
        """Write the scored rows of ``part`` (with :data:`ROW_COLUMN`): each row once, in input order.

        Raises:
            RuntimeError: a row of the part is missing (nothing is written then).
        """
        import numpy as np

        rows = table.column(ROW_COLUMN).to_numpy()
        unique, first = np.unique(rows, return_index=True)
        if len(unique) != part.rows or unique[0] != part.start or unique[-1] != part.stop - 1:
            raise RuntimeError(f"part {part.index}: {len(unique)} of its {part.rows} rows came back; not written")
        table = table.take(first).drop_columns([ROW_COLUMN])  # np.unique sorts: input order, duplicates gone
        path = self.part_path(part)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self.done.add(part.index)

    def finish(self) -> int:
        """Stream every part into the output file and remove the parts folder; rows written."""
        missing = self.pending
        if missing:
            raise RuntimeError(f"{len(missing)} parts are not scored yet (first: part {missing[0].index})")
        rows = write_output((self.part_path(p) for p in self.plan.parts), self.output)
        shutil.rmtree(self.parts_dir)
        return rows


def read_numbered(plan: InputPlan, part: Part) -> Any:
    """Part ``part`` of the input with its row numbers (:data:`ROW_COLUMN`) appended."""
    import pyarrow as pa

    table = read_part(plan, part)
    return table.append_column(ROW_COLUMN, pa.array(range(part.start, part.stop), pa.int64()))


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_same(old: Mapping[str, Any], new: Mapping[str, Any], parts_dir: Path) -> None:
    differ = [k for k in ("version", "part_rows") if old.get(k) != new.get(k)]
    if old.get("input") != new.get("input"):
        differ.append("the input file (its path, size or modification time)")
    o, n = old.get("settings", {}), new.get("settings", {})
    differ += [f"{k} ({o.get(k)!r} then, {n.get(k)!r} now)" for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
    if differ:
        raise ResumeMismatchError(
            f"an interrupted run left {os.fspath(parts_dir)!r} with other settings: {'; '.join(differ)}. "
            "Run again with the same arguments to resume it, or delete that folder to start over"
        )


def scored_pairs(table: Any, score_column: str) -> int:
    """How many (query, document) pairs a scored table holds (a list column counts its items)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(score_column)
    if pa.types.is_list(column.type):
        total = pc.sum(pc.list_value_length(column)).as_py()
        return int(total or 0)
    return int(table.num_rows)


def _slices(table: Any, size: int) -> Iterator[Any]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def run_in_process(
    job: BatchJob,
    scorer: BatchScorer,
    *,
    batch_size: int,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Score the pending parts of ``job`` here, one batch of ``batch_size`` rows per engine call,
    then write the output. Returns the rows written."""
    import pyarrow as pa

    for part in job.pending:
        table = job.read(part)
        scored = pa.concat_tables([scorer.score_table(batch) for batch in _slices(table, batch_size)])
        job.commit(part, scored)
        if on_progress is not None:
            on_progress(part.rows, scored_pairs(scored, scorer.score_column))
    return job.finish()
