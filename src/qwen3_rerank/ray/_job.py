"""A :class:`~qwen3_rerank.batch.BatchJob` run on Ray: the parts read by Ray tasks, scored by an
actor pool (:func:`~._dataset.rerank_dataset`), committed by the driver part by part.

The driver keeps only the rows of parts not yet complete. A part is committed once all its rows
are back; a row that comes back twice (a batch retried after its actor died after it had
returned) is kept once, by its row number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ..batch._files import InputPlan
from ..batch._job import ROW_COLUMN, BatchJob, ProgressCallback, read_numbered, scored_pairs
from ._dataset import rerank_dataset

__all__ = ["PART_COLUMN", "connect", "disconnect", "run_on_ray"]

PART_COLUMN = "__qwen3_rerank_part__"

READ_CPUS = 0.25
"""CPUs reserved per read task: a small share, so that reading never waits for the actors' CPUs."""


def connect(address: str | None, *, workers: int, cpus_per_worker: float, quiet: bool = False) -> bool:
    """Join the Ray cluster at ``address``, or start a local Ray; ``True`` when this call started it.

    A Ray already initialised in this process is used as it is. A local Ray declares at least
    enough logical CPUs for the workers plus the read tasks (Ray's CPUs are scheduling slots; too
    few of them make the read tasks wait forever for the actors). ``quiet`` keeps Ray's INFO logs
    and Ray Data's progress bars off stderr (where the command draws its own progress line).
    """
    ray = _import_ray()
    if quiet:
        import logging

        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # also its "progress bars disabled" notice
    if ray.is_initialized():
        return False
    level = {"logging_level": 30} if quiet else {}  # logging.WARNING
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **level)
        return True
    slots = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker + 1))
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False, **level)
    return True


def disconnect() -> None:
    """Shut down the Ray this process started or joined (:func:`connect`)."""
    _import_ray().shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  # the [ray] extra installs both; fail here, not in a worker
    except ImportError as exc:
        from .._exceptions import MissingDependencyError

        raise MissingDependencyError("running on Ray needs Ray: pip install 'qwen3-rerank[ray]'") from exc
    return ray


def _read_parts(batch: Any, *, plan: InputPlan) -> Any:
    import pyarrow as pa

    tables = []
    for index in batch.column("part").to_pylist():
        table = read_numbered(plan, plan.parts[index])
        tables.append(table.append_column(PART_COLUMN, pa.array([index] * table.num_rows, pa.int64())))
    return pa.concat_tables(tables)


def run_on_ray(
    job: BatchJob,
    rerank_options: Mapping[str, Any],
    *,
    workers: int,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    batch_size: int,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Score the pending parts of ``job`` on the connected Ray, then write the output; rows written.

    ``rerank_options`` are :func:`~._dataset.rerank_dataset`'s model, engine, column and layout
    keywords.
    """
    import pyarrow as pa
    import ray.data

    pending = {p.index: p for p in job.pending}
    if pending:
        items = ray.data.from_items([{"part": i} for i in pending], override_num_blocks=len(pending))
        ds = items.map_batches(
            _read_parts,  # type: ignore[arg-type]  # fn_kwargs supplies the keyword-only plan
            fn_kwargs={"plan": job.plan},
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=READ_CPUS,
        )
        ds = rerank_dataset(
            ds, concurrency=workers, num_gpus=num_gpus, num_cpus=num_cpus, batch_size=batch_size, **rerank_options
        )
        score_column = str(rerank_options.get("score_column", "score"))
        arrived: dict[int, list[Any]] = {}
        seen: dict[int, set[int]] = {}
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            parts = block.column(PART_COLUMN).to_numpy()
            rows = block.column(ROW_COLUMN).to_numpy()
            block = block.drop_columns([PART_COLUMN])
            for index in set(parts.tolist()):
                mask = parts == index
                arrived.setdefault(index, []).append(block.filter(pa.array(mask)))
                seen.setdefault(index, set()).update(rows[mask].tolist())
                part = pending[index]
                if len(seen[index]) == part.rows:
                    scored = pa.concat_tables(arrived.pop(index))
                    job.commit(part, scored)
                    del seen[index]
                    if on_progress is not None:
                        on_progress(part.rows, scored_pairs(scored, score_column))
        if arrived:
            first = min(arrived)
            raise RuntimeError(
                f"Ray returned {len(seen[first])} of the {pending[first].rows} rows of part {first}; "
                "the finished parts are kept: run the same command again to score the rest"
            )
    return job.finish()
