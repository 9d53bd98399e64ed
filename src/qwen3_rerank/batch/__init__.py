"""Batch reranking of files and tables: no Ray needed (see :mod:`qwen3_rerank.ray` to scale out).

* :class:`BatchScorer`: a callable that holds one :class:`~qwen3_rerank.Reranker` and scores a
  batch of rows (a ``pyarrow.Table``, ``pandas.DataFrame`` or dict of columns) with one
  ``rerank_many`` call, in either layout (a (query, document) pair per row, or a query and a list
  of documents per row). Ray Data runs it as an actor pool; it works the same in-process.
* :class:`BatchJob` and :func:`run_in_process`: a resumable file job (Parquet, JSONL, CSV), read
  in parts and never whole (what ``qwen3-rerank batch`` runs).

Needs ``pyarrow`` (``pip install 'qwen3-rerank[batch]'``); importing this package does not load it.

Example:
    >>> from qwen3_rerank.batch import BatchJob, BatchScorer, run_in_process
    >>> scorer = BatchScorer("transformers", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> job = BatchJob.open("pairs.parquet", "scored.parquet", settings={"model": "0.6B"})  # doctest: +SKIP
    >>> run_in_process(job, scorer, batch_size=64)  # doctest: +SKIP
"""

from __future__ import annotations

from ._files import FORMATS, file_format
from ._job import DEFAULT_PART_ROWS, BatchJob, ResumeMismatchError, run_in_process
from ._scorer import LAYOUTS, BatchScorer

__all__ = [
    "BatchJob",
    "BatchScorer",
    "DEFAULT_PART_ROWS",
    "FORMATS",
    "LAYOUTS",
    "ResumeMismatchError",
    "file_format",
    "run_in_process",
]
