"""Reranking as a Ray Data stage: :class:`~qwen3_rerank.batch.BatchScorer` on an actor pool."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..batch import BatchScorer
from ..batch._scorer import Layout

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MAX_RESTARTS", "rerank_dataset"]

DEFAULT_BATCH_SIZE = 256
"""Rows per ``rerank_many`` call: large enough to keep an engine busy, small enough to lose little
when a worker dies (its batch is scored again elsewhere)."""

DEFAULT_MAX_RESTARTS = 3
"""How often a dead scoring actor is restarted, and a batch it was scoring retried, before the
job fails. Ray Data's own default is forever, which turns an engine that always crashes (out of
GPU memory, a bad checkpoint) into a job that never ends."""


def rerank_dataset(
    ds: Any,
    *,
    model: str | None,
    engine: str = "transformers",
    engine_options: Mapping[str, Any] | None = None,
    instruction: str | None = None,
    query_column: str = "query",
    document_column: str = "document",
    score_column: str = "score",
    rank_column: str = "rank",
    layout: Layout = "auto",
    concurrency: int = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> Any:
    """Add the reranker's scores to a ``ray.data.Dataset`` (lazily, like every Ray Data stage).

    ``concurrency`` actors each build one engine (once, in the actor) and score batches of
    ``batch_size`` rows with one ``rerank_many`` call each, exactly as in-process. Every input
    column is kept.

    Args:
        ds: The ``ray.data.Dataset``.
        model: Hub id or local path of the checkpoint (for ``engine="remote"``: the tokenizer
            source, or ``None``).
        engine: ``"transformers"``, ``"vllm"`` or ``"remote"``.
        engine_options: The engine's and the Reranker's keywords (``dtype``, ``max_length``,
            ``base_url``, ...), as :func:`qwen3_rerank.settings.build_reranker` takes them.
        instruction: The task instruction (``None``: the model card's default).
        query_column: The query column.
        document_column: The document column: a text per row (layout ``"pairs"``) or a list of
            texts per row (``"lists"``).
        score_column: The column added with P(yes) (a list of them for ``"lists"``).
        rank_column: The column added with each document's rank in its row, 1 = best (``"lists"``).
        layout: ``"pairs"``, ``"lists"`` or ``"auto"`` (a list-typed document column is ``"lists"``).
        concurrency: Scoring actors (engines): a fixed ``ray.data.ActorPoolStrategy(size=...)``.
        num_gpus: GPUs per actor (``1`` for one engine per GPU; ``0`` on CPU).
        num_cpus: CPUs reserved per actor (Ray's default, 1, when ``None``). On a small machine give
            a fraction (``0.5``): actors holding every CPU leave none for Ray Data's read tasks,
            and the job waits forever.
        batch_size: Rows per engine call.
        max_restarts: Restarts of a dead actor, and retries of the batch it was scoring.

    Returns:
        The ``ray.data.Dataset`` with the score (and rank) columns.

    Example:
        >>> import ray
        >>> from qwen3_rerank.ray import rerank_dataset
        >>> ds = ray.data.from_items([{"query": "what is BM25?", "document": "BM25 ranks."}])  # doctest: +SKIP
        >>> rerank_dataset(ds, model="Qwen/Qwen3-Reranker-0.6B", num_gpus=1).take_all()  # doctest: +SKIP
    """
    import ray.data

    for name, value in (("concurrency", concurrency), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
    if num_gpus < 0 or (num_cpus is not None and num_cpus < 0):
        raise ValueError(f"num_gpus and num_cpus must be >= 0, got {num_gpus!r} and {num_cpus!r}")
    # Built here, on the driver, to check the options before any actor starts: a typo fails now,
    # not after the cluster has scheduled workers (nothing is loaded).
    from ..settings import reranker_kwargs

    reranker_kwargs(engine, model=model, **dict(engine_options or {}))
    constructor = {
        "engine": engine,
        "model": model,
        "engine_options": dict(engine_options or {}),
        "instruction": instruction,
        "query_column": query_column,
        "document_column": document_column,
        "score_column": score_column,
        "rank_column": rank_column,
        "layout": layout,
    }
    with warnings.catch_warnings():
        # Ray 2.60 takes an actor's max_restarts / max_task_retries only as the **ray_remote_args
        # it calls deprecated (removal announced for 2.64; the [ray] extra stays below it) and has
        # no named parameter for them yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            BatchScorer,
            fn_constructor_kwargs=constructor,
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
            # The scorer appends columns to a new table; it never writes into the batch it was given.
            zero_copy_batch=True,
            udf_modifying_row_count=False,
            max_restarts=max_restarts,
            max_task_retries=max_restarts,
        )
