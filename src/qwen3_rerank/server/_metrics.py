"""Prometheus metrics of one app, in a registry of its own (two apps in a process never mix).

Served as text at ``GET /metrics``::

    qwen3_rerank_requests_total{route, status}     answers by route and HTTP status
    qwen3_rerank_request_seconds{route}            latency histogram (whole request)
    qwen3_rerank_pairs_total                       (query, document) pairs scored
    qwen3_rerank_tokens_total                      tokens of the sequences scored
    qwen3_rerank_batch_pairs                       pairs per engine call (histogram)
    qwen3_rerank_batch_requests                    requests coalesced into one engine call (histogram)
    qwen3_rerank_queue_depth                       requests waiting for the engine
    qwen3_rerank_dropped_requests_total            requests whose client left before their batch ran
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128)


class Metrics:
    """The app's counters, histograms and gauges (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("qwen3_rerank_requests", "HTTP answers", ("route", "status"), registry=r)
        self.latency = Histogram(
            "qwen3_rerank_request_seconds", "Request latency", ("route",), buckets=_LATENCY_BUCKETS, registry=r
        )
        self.pairs = Counter("qwen3_rerank_pairs", "Query-document pairs scored", registry=r)
        self.tokens = Counter("qwen3_rerank_tokens", "Tokens of the scored sequences", registry=r)
        self.batch_pairs = Histogram(
            "qwen3_rerank_batch_pairs", "Pairs per engine call", buckets=_PAIR_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "qwen3_rerank_batch_requests", "Requests coalesced into one engine call", buckets=_REQUEST_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("qwen3_rerank_queue_depth", "Requests waiting for the engine", registry=r)
        self.dropped = Counter(
            "qwen3_rerank_dropped_requests", "Requests whose client disconnected before their batch ran", registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
