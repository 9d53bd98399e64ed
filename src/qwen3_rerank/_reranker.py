"""The core :class:`Reranker`: validation, encoding, sorting and results, written once."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._encoding import PairEncoder, PlannedDocument
from ._types import EncodedPair, EngineOutput, Ranking, RerankResult, RerankStats
from .engines import Engine, create_engine
from .engines._base import validate_output
from ._scores import probability

__all__ = ["Reranker"]

logger = logging.getLogger("qwen3_rerank")

DEFAULT_MAX_LENGTH = 8192
LongDocuments = Literal["truncate", "window"]


@dataclass(slots=True)
class _Group:
    query: str
    documents: list[str]
    plan: list[PlannedDocument]
    pairs: int
    tokens: int


@dataclass(slots=True)
class _Plan:
    groups: list[_Group]
    pairs: list[EncodedPair]
    started: float


class Reranker:
    """Rerank documents for a query with a Qwen3-Reranker model.

    Args:
        engine: An :class:`~qwen3_rerank.engines.Engine` instance, or the name of one
            (``"transformers"``, ``"vllm"``, ``"remote"``) to create with ``model`` and
            ``engine_options``.
        model: Hub id or local path of the model, when ``engine`` is a name.
        instruction: Task instruction for every call (``None``: the model card's default).
        max_length: Most tokens in one scored sequence, template included (default 8192, the
            model card's). Lowered automatically to the engine's own limit.
        top_n: Default number of results to return (``None``: all).
        long_documents: ``"truncate"`` (default) cuts a document that does not fit;
            ``"window"`` scores overlapping windows of it and keeps the best.
        window_overlap: Tokens shared by consecutive windows in ``"window"`` mode.
        **engine_options: Passed to the engine when ``engine`` is a name.

    Example:
        >>> from qwen3_rerank import Reranker
        >>> reranker = Reranker("transformers", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> best = reranker.rerank("what is BM25?", ["BM25 is a ranking function.", "Paris"])[0]  # doctest: +SKIP
        >>> best.index, round(best.score, 3)  # doctest: +SKIP
        (0, 0.998)
    """

    def __init__(
        self,
        engine: Engine | str = "transformers",
        *,
        model: str | None = None,
        instruction: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        top_n: int | None = None,
        long_documents: LongDocuments = "truncate",
        window_overlap: int = 64,
        **engine_options: Any,
    ) -> None:
        _check_top_n(top_n)
        _check_instruction(instruction)
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if long_documents not in ("truncate", "window"):
            raise ValueError(f"long_documents must be 'truncate' or 'window', got {long_documents!r}")
        if not isinstance(window_overlap, int) or window_overlap < 0:
            raise ValueError(f"window_overlap must be an int >= 0, got {window_overlap!r}")
        if isinstance(engine, str):
            if model is not None:
                engine_options["model"] = model
            self._engine = create_engine(engine, **engine_options)
            self._owns_engine = True
        elif isinstance(engine, Engine):
            if model is not None or engine_options:
                raise TypeError(
                    "model and engine options go to the engine's constructor when you pass an Engine "
                    f"instance; got model={model!r} and {sorted(engine_options)}"
                )
            self._engine = engine
            self._owns_engine = False
        else:
            raise TypeError(
                f"engine must be an Engine or one of 'transformers', 'vllm', 'remote'; got {type(engine).__name__}"
            )
        self.instruction = instruction
        self.top_n = top_n
        self.long_documents: LongDocuments = long_documents
        self.window_overlap = window_overlap
        limit = self._engine.max_model_len
        self.max_length = min(max_length, limit) if limit else max_length
        if self.max_length < max_length:
            logger.info("max_length lowered from %d to the engine's limit %d", max_length, self.max_length)
        self._encoder: PairEncoder | None = None

    # -- public API --------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine that scores."""
        return self._engine

    @property
    def encoder(self) -> PairEncoder:
        """The :class:`PairEncoder` built from the engine's tokenizer (created on first use)."""
        if self._encoder is None:
            encoder = PairEncoder(self._engine.tokenizer)
            encoder.check_max_length(self.max_length)
            self._encoder = encoder
        return self._encoder

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> Ranking:
        """Score ``documents`` against ``query`` and return them best first.

        Args:
            query: The search query.
            documents: The candidate texts (a list of str). Empty strings are scored.
            top_n: Keep only the best ``top_n`` (default: the reranker's ``top_n``; ``None``: all).
            instruction: Task instruction for this call (default: the reranker's).
            score_threshold: Drop results whose P("yes") is below this value.

        Returns:
            A :class:`Ranking` (a list of :class:`RerankResult`, ties in input order) with
            ``.stats``. An empty ``documents`` gives an empty ranking without calling the engine.
        """
        plan = self._plan([query], [documents], instruction)
        output = self._engine.score(plan.pairs) if plan.pairs else EngineOutput(logits=[])
        return self._finish(plan, output, top_n, score_threshold)[0]

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> Ranking:
        """Asynchronous :meth:`rerank` through the engine's real async path."""
        plan = await self._aplan([query], [documents], instruction)
        output = await self._engine.ascore(plan.pairs) if plan.pairs else EngineOutput(logits=[])
        return self._finish(plan, output, top_n, score_threshold)[0]

    def rerank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> list[Ranking]:
        """Rerank several queries, each with its own documents, in one engine call.

        ``documents[i]`` are the candidates of ``queries[i]``. Returns one :class:`Ranking` per
        query, in the order of ``queries``.
        """
        plan = self._plan(queries, documents, instruction)
        output = self._engine.score(plan.pairs) if plan.pairs else EngineOutput(logits=[])
        return self._finish(plan, output, top_n, score_threshold)

    async def arerank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> list[Ranking]:
        """Asynchronous :meth:`rerank_many`."""
        plan = await self._aplan(queries, documents, instruction)
        output = await self._engine.ascore(plan.pairs) if plan.pairs else EngineOutput(logits=[])
        return self._finish(plan, output, top_n, score_threshold)

    def close(self) -> None:
        """Close the engine if this reranker created it (an injected engine is left open)."""
        if self._owns_engine:
            self._engine.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Reranker(engine={self._engine!r}, max_length={self.max_length}, top_n={self.top_n}, "
            f"long_documents={self.long_documents!r})"
        )

    # -- shared sync/async helpers ----------------------------------------------------------
    async def _aplan(self, queries: Sequence[str], documents: Sequence[Sequence[str]], instruction: str | None) -> _Plan:
        """:meth:`_plan` for the async API: on a worker thread when tokenizing may wait on I/O."""
        if self._engine.plan_may_block:
            import asyncio  # not at module level: `import qwen3_rerank` stays light

            return await asyncio.to_thread(self._plan, queries, documents, instruction)
        return self._plan(queries, documents, instruction)

    def _plan(self, queries: Sequence[str], documents: Sequence[Sequence[str]], instruction: str | None) -> _Plan:
        started = time.perf_counter()
        _check_instruction(instruction)
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise TypeError(f"queries must be a list of str, got {type(queries).__name__}")
        if isinstance(documents, str) or not isinstance(documents, Sequence) or len(documents) != len(queries):
            raise ValueError(
                "documents must be a list with one list of documents per query "
                f"(got {len(queries)} queries and {_describe(documents)})"
            )
        for qi, query in enumerate(queries):
            if query is None:
                raise ValueError("query is missing: pass the search query as a str")
            if not isinstance(query, str):
                raise TypeError(f"query {qi} must be a str, got {type(query).__name__}")
        doc_lists = [_check_documents(docs) for docs in documents]
        instruction = self.instruction if instruction is None else instruction
        if not any(doc_lists):
            return _Plan([_Group(q, [], [], 0, 0) for q in queries], [], started)

        encoder = self.encoder
        active = [i for i, docs in enumerate(doc_lists) if docs]
        query_ids = encoder.encode_queries([queries[i] for i in active], instruction)
        flat_docs = [d for i in active for d in doc_lists[i]]
        flat_ids = encoder.encode_documents(flat_docs)
        windows = self.long_documents == "window"

        groups: list[_Group] = [_Group(q, [], [], 0, 0) for q in queries]
        pairs: list[EncodedPair] = []
        offset = 0
        for qids, i in zip(query_ids, active):
            docs = doc_lists[i]
            doc_ids = flat_ids[offset : offset + len(docs)]
            offset += len(docs)
            fitted, query_cut = encoder.fit_query(qids, max(len(d) for d in doc_ids), self.max_length)
            if query_cut:
                logger.warning("query %d was cut to fit max_length=%d", i, self.max_length)
            group_pairs, plan = encoder.build(
                fitted,
                doc_ids,
                max_length=self.max_length,
                group=i,
                windows=windows,
                window_overlap=self.window_overlap,
            )
            base = len(pairs)
            plan = [PlannedDocument(base + p.first, p.count, p.truncated) for p in plan]
            pairs.extend(group_pairs)
            groups[i] = _Group(queries[i], docs, plan, len(group_pairs), sum(len(p.input_ids) for p in group_pairs))
        return _Plan(groups, pairs, started)

    def _finish(
        self, plan: _Plan, output: EngineOutput, top_n: int | None, score_threshold: float | None
    ) -> list[Ranking]:
        _check_top_n(top_n)
        if score_threshold is not None and not (isinstance(score_threshold, (int, float)) and 0.0 <= score_threshold <= 1.0):
            raise ValueError(f"score_threshold must be a probability in [0, 1] or None, got {score_threshold!r}")
        top_n = self.top_n if top_n is None else top_n
        logits = validate_output(output, len(plan.pairs), self._engine.name)
        seconds = time.perf_counter() - plan.started
        rankings: list[Ranking] = []
        for group in plan.groups:
            results: list[RerankResult] = []
            for index, (doc, planned) in enumerate(zip(group.documents, group.plan)):
                span = range(planned.first, planned.first + planned.count)
                best = max(span, key=lambda k: logits[k])  # first best on ties
                results.append(
                    RerankResult(
                        index=index,
                        document=doc,
                        score=probability(logits[best]),
                        logit=logits[best],
                        truncated=planned.truncated,
                        num_tokens=len(plan.pairs[best].input_ids),
                        window=(best - planned.first) if planned.count > 1 else None,
                        num_windows=planned.count,
                    )
                )
            # Sorting by log-odds keeps the order exact where probabilities round to 1.0; the
            # sort is stable, so ties keep input order.
            results.sort(key=lambda r: -r.logit)
            if score_threshold is not None:
                results = [r for r in results if r.score >= score_threshold]
            if top_n is not None:
                results = results[:top_n]
            stats = RerankStats(
                pairs=group.pairs,
                tokens=group.tokens,
                truncated=sum(p.truncated for p in group.plan),
                seconds=seconds,
                engine=self._engine.name,
            )
            rankings.append(Ranking(results, stats))
        if plan.pairs:
            logger.debug(
                "reranked %d queries: %d sequences, %d tokens, %d truncated, %.3fs",
                len(plan.groups),
                len(plan.pairs),
                sum(g.tokens for g in plan.groups),
                sum(r.stats.truncated for r in rankings),
                seconds,
            )
        return rankings


def _describe(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{len(value)} document lists"
    return type(value).__name__


def _check_documents(documents: Sequence[str]) -> list[str]:
    if documents is None:
        raise ValueError("documents is missing: pass a list of str (an empty list is fine)")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str, got {type(documents).__name__}")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise TypeError(f"document {i} must be a str, got {type(d).__name__}; pass the document's text")
    return docs


def _check_top_n(top_n: int | None) -> None:
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n <= 0):
        raise ValueError(f"top_n must be a positive int or None (all results), got {top_n!r}")


def _check_instruction(instruction: str | None) -> None:
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str or None (the default instruction), got {type(instruction).__name__}")
