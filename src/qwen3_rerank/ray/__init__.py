"""Scaling out on Ray: batch reranking on Ray Data, serving replicas on Ray Serve.

Needs ``pip install 'qwen3-rerank[ray]'``; importing this package does not import Ray (each
function imports it when called), so ``import qwen3_rerank`` stays light.

* :func:`rerank_dataset`: add scores to a ``ray.data.Dataset`` with a pool of actors, one
  engine each (:class:`qwen3_rerank.batch.BatchScorer`).
* :func:`run_on_ray`: run a resumable :class:`qwen3_rerank.batch.BatchJob` (what
  ``qwen3-rerank batch --workers N`` does).
* :func:`rerank_app`: the app of ``qwen3-rerank serve`` as a Ray Serve deployment, one engine per
  replica (``serve run qwen3_rerank.ray:app_builder model=...`` from the shell).
"""

from __future__ import annotations

from ._dataset import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RESTARTS, rerank_dataset
from ._job import connect, disconnect, run_on_ray
from ._serve import DEFAULT_MAX_ONGOING_REQUESTS, app_builder, rerank_app

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_ONGOING_REQUESTS",
    "DEFAULT_MAX_RESTARTS",
    "app_builder",
    "connect",
    "disconnect",
    "rerank_app",
    "rerank_dataset",
    "run_on_ray",
]
