"""The core :class:`Reranker`: validation, planning, sorting and results, written once.

A call runs in three steps shared by the sync and async methods:

1. :meth:`Reranker._check` validates every argument (types, ``top_n``, ``score_threshold``, the
   instruction, lone surrogates in any text) before anything is tokenized or sent;
2. :meth:`PairEncoder.plan` builds the sequences (on a worker thread in the async API when the
   engine's tokenizer may wait on I/O);
3. the engine scores :attr:`RerankPlan.pairs` (``score`` or ``ascore``) and :meth:`Reranker._finish`
   turns the log-odds into sorted :class:`Ranking` objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _progress
from ._defaults import USE_DEFAULT, UseDefault, check_top_n
from ._encoding import LongDocuments, PairEncoder, PlannedQuery, RerankPlan, check_plan_options, validate_texts
from ._exceptions import ConfigurationError, EngineError
from ._scores import probability
from ._types import EngineOutput, Ranking, RerankResult, RerankStats
from .engines import Engine, create_engine
from .engines._base import ascore_checked, validate_output

__all__ = ["Reranker"]

logger = logging.getLogger("qwen3_rerank")

DEFAULT_MAX_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class _Call:
    """One validated call: its texts and options, before planning."""

    queries: list[str]
    documents: list[list[str]]
    instruction: str | None
    top_n: int | None
    score_threshold: float | None
    started: float


class Reranker:
    """Rerank documents for a query with a Qwen3-Reranker model.

    Args:
        engine: An :class:`~qwen3_rerank.engines.Engine` instance, or the name of one
            (``"transformers"``, ``"vllm"``, ``"remote"``) to create with ``model`` and
            ``engine_options`` through :func:`qwen3_rerank.engines.create_engine`: the same
            defaults and environment variables as the CLI and the integrations
            (``$QWEN3_RERANK_MODEL``, else ``Qwen/Qwen3-Reranker-0.6B``; ``$QWEN3_RERANK_BASE_URL``
            and ``$QWEN3_RERANK_API_KEY`` for ``"remote"``), and a misspelled option is answered
            with "did you mean".
        model: Hub id or local path of the model, when ``engine`` is a name.
        instruction: Task instruction for every call (``None``: the model card's default).
        max_length: Most tokens in one scored sequence, template included (default 8192, the
            model card's). Lowered automatically to the engine's own limit, read from the engine
            on first use (the constructor does no I/O of its own).
        top_n: Default number of results a call returns (``None``: all); a call's own ``top_n``
            overrides it, ``top_n=None`` in a call returns all.
        long_documents: ``"truncate"`` (default) cuts a document that does not fit;
            ``"window"`` scores overlapping windows of it and keeps the best.
        window_overlap: Tokens shared by consecutive windows in ``"window"`` mode.
        show_progress_bar: Draw a progress bar by pairs on stderr for a call of more than 1,024
            sequences (sentence-transformers' option of the same name); a call's own
            ``show_progress_bar`` overrides it.
        **engine_options: Passed to the engine when ``engine`` is a name.

    Every argument of a call is checked before anything is tokenized or scored. What does not
    fit ``max_length`` is cut by the policy of :mod:`qwen3_rerank._encoding`: the document's end
    first; the instruction, then the query, only when they would leave the document less than
    half the room. A cut query is always reported (``ranking.stats.query_truncated`` and a
    WARNING log).

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
        show_progress_bar: bool = False,
        **engine_options: Any,
    ) -> None:
        check_top_n(top_n)
        validate_texts([], [], instruction)
        check_plan_options(max_length, long_documents, window_overlap)
        if isinstance(engine, str):
            self._engine = create_engine(engine, model=model, **engine_options)
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
        #: Show a progress bar by pairs (stderr) for calls of more than 1,024 sequences.
        self.show_progress_bar = bool(show_progress_bar)
        self._requested_max_length = max_length
        self._max_length: int | None = None  # resolved against the engine's limit on first use
        self._encoder: PairEncoder | None = None
        self._closed = False

    # -- public API --------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine that scores."""
        return self._engine

    @property
    def max_length(self) -> int:
        """Most tokens in one sequence: the ``max_length`` asked for, lowered to the engine's
        ``max_model_len`` (read on first use; for a remote engine this may ask the server)."""
        if self._max_length is None:
            requested = self._requested_max_length
            limit = self._engine.max_model_len
            effective = min(requested, limit) if limit else requested
            if limit and limit < requested and limit < self.encoder.min_max_length():
                # Lowering max_length to the engine's limit leaves no room: the limit is the fix.
                raise ConfigurationError(
                    f"the {self._engine.name} engine's context length (max_model_len={limit}) is too small "
                    f"for the Qwen3-Reranker prompt, which needs at least {self.encoder.min_max_length()} "
                    "tokens for its template, a query and a document; raise the limit (`vllm serve "
                    "--max-model-len 8192`, or VLLMEngine(max_model_len=...)); lowering max_length cannot help"
                )
            if effective < requested:
                logger.info("max_length lowered from %d to the engine's limit %d", requested, effective)
            self._max_length = effective
        return self._max_length

    @property
    def encoder(self) -> PairEncoder:
        """The :class:`PairEncoder` built from the engine's tokenizer (created on first use)."""
        if self._encoder is None:
            self._check_open()
            self._encoder = PairEncoder(self._engine.tokenizer)
        return self._encoder

    def plan(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], *, instruction: str | None = None
    ) -> RerankPlan:
        """The sequences :meth:`rerank_many` would send for these arguments, without scoring.

        Uses this reranker's ``max_length``, ``long_documents``, ``window_overlap`` and
        ``instruction`` (when ``instruction`` is ``None``); see :meth:`PairEncoder.plan`.
        """
        call = self._check(queries, documents, instruction, None, None)
        return self._plan(call)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None | UseDefault = USE_DEFAULT,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> Ranking:
        """Score ``documents`` against ``query`` and return them best first.

        Args:
            query: The search query.
            documents: The candidate texts (a list of str). Empty strings are scored.
            top_n: Keep only the best ``top_n``; ``None``: all (default: the reranker's ``top_n``).
            instruction: Task instruction for this call (default: the reranker's).
            score_threshold: Drop results whose P("yes") is below this value.

        Returns:
            A :class:`Ranking` (a list of :class:`RerankResult`, ties in input order: equal
            documents get exactly the same score) with ``.stats``. An empty ``documents`` gives an
            empty ranking without calling the engine.

        Raises:
            TypeError, ValueError: a bad argument, before any tokenization or engine work (a text
                with a lone surrogate names its document index).
        """
        return self.rerank_many([query], [documents], top_n=top_n, instruction=instruction,
                                score_threshold=score_threshold)[0]  # fmt: skip

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None | UseDefault = USE_DEFAULT,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> Ranking:
        """Asynchronous :meth:`rerank` through the engine's real async path."""
        rankings = await self.arerank_many([query], [documents], top_n=top_n, instruction=instruction,
                                           score_threshold=score_threshold)  # fmt: skip
        return rankings[0]

    def rerank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        top_n: int | None | UseDefault = USE_DEFAULT,
        instruction: str | None = None,
        score_threshold: float | None = None,
        show_progress_bar: bool | UseDefault = USE_DEFAULT,
    ) -> list[Ranking]:
        """Rerank several queries, each with its own documents, in one engine call.

        ``documents[i]`` are the candidates of ``queries[i]``. Returns one :class:`Ranking` per
        query, in the order of ``queries``. A sequence that appears more than once in the call (an
        equal query and document) is scored once. With ``show_progress_bar`` (default: the
        reranker's), a call of more than 1,024 sequences draws a bar by pairs and goes to the
        engine in runs of 1,024.
        """
        call = self._check(queries, documents, instruction, top_n, score_threshold)
        plan = self._plan(call)
        if not plan.pairs:
            output = EngineOutput(logits=[])
        elif self._shows_progress(show_progress_bar, plan):
            output = _progress.score(self._engine, plan.pairs)
        else:
            output = self._engine.score(plan.pairs)
        return self._finish(call, plan, output)

    async def arerank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        top_n: int | None | UseDefault = USE_DEFAULT,
        instruction: str | None = None,
        score_threshold: float | None = None,
        show_progress_bar: bool | UseDefault = USE_DEFAULT,
    ) -> list[Ranking]:
        """Asynchronous :meth:`rerank_many`."""
        call = self._check(queries, documents, instruction, top_n, score_threshold)
        if self._engine.plan_may_block:
            import asyncio  # not at module level: `import qwen3_rerank` stays light

            # Tokenizing (and reading the engine's max_model_len) may wait on I/O.
            plan = await asyncio.to_thread(self._plan, call)
        else:
            plan = self._plan(call)
        if not plan.pairs:
            output = EngineOutput(logits=[])
        elif self._shows_progress(show_progress_bar, plan):
            output = await _progress.ascore(self._engine, plan.pairs, ascore_checked)
        else:
            output = await ascore_checked(self._engine, plan.pairs)
        return self._finish(call, plan, output)

    def score_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        show_progress_bar: bool | UseDefault = USE_DEFAULT,
    ) -> list[float]:
        """P("yes") of each ``(query, document)`` pair, in input order, in one engine call.

        The pairs API of sentence-transformers' ``CrossEncoder.predict(pairs)`` and FlagEmbedding's
        ``compute_score(pairs)``: pairs of one query share its prefix (one engine call for all).
        Use :meth:`rerank_many` for the log-odds, truncation flags and sorted results.

        Example:
            >>> pairs = [("what is BM25?", "BM25 is a ranking function."), ("what is BM25?", "Paris")]
            >>> reranker.score_pairs(pairs)  # doctest: +SKIP
            [0.998, 0.001]
        """
        queries, documents, where = _group_pairs(pairs)
        rankings = self.rerank_many(
            queries, documents, top_n=None, instruction=instruction, show_progress_bar=show_progress_bar
        )
        return _pair_scores(rankings, where)

    async def ascore_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        show_progress_bar: bool | UseDefault = USE_DEFAULT,
    ) -> list[float]:
        """Asynchronous :meth:`score_pairs` through the engine's async path."""
        queries, documents, where = _group_pairs(pairs)
        rankings = await self.arerank_many(
            queries, documents, top_n=None, instruction=instruction, show_progress_bar=show_progress_bar
        )
        return _pair_scores(rankings, where)

    def close(self) -> None:
        """Release what this reranker owns: the engine if it created it (an injected engine is
        left open) and its encoder. Idempotent; a closed reranker raises
        :class:`~qwen3_rerank.EngineError` when used."""
        if self._closed:
            return
        self._closed = True
        self._encoder = None
        if self._owns_engine:
            self._engine.close()

    async def aclose(self) -> None:
        """Asynchronous :meth:`close` (closes an owned engine's async clients on this loop)."""
        if self._closed:
            return
        self._closed = True
        self._encoder = None
        if self._owns_engine:
            await self._engine.aclose()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Reranker:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        max_length = self._max_length if self._max_length is not None else self._requested_max_length
        return (
            f"Reranker(engine={self._engine!r}, max_length={max_length}, top_n={self.top_n}, "
            f"long_documents={self.long_documents!r})"
        )

    # -- the steps shared by sync and async ---------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("this Reranker is closed; create a new one to rerank again")

    def _check(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        instruction: str | None,
        top_n: int | None | UseDefault,
        score_threshold: float | None,
    ) -> _Call:
        """Every argument, checked before any tokenization or engine work."""
        started = time.perf_counter()
        self._check_open()
        chosen = self.top_n if isinstance(top_n, UseDefault) else check_top_n(top_n)
        if score_threshold is not None and (
            isinstance(score_threshold, bool)
            or not isinstance(score_threshold, (int, float))
            or not 0.0 <= score_threshold <= 1.0
        ):
            raise ValueError(f"score_threshold must be a probability in [0, 1] or None, got {score_threshold!r}")
        queries, doc_lists = validate_texts(queries, documents, instruction)
        return _Call(
            queries=queries,
            documents=doc_lists,
            instruction=self.instruction if instruction is None else instruction,
            top_n=chosen,
            score_threshold=score_threshold,
            started=started,
        )

    def _shows_progress(self, show: bool | UseDefault, plan: RerankPlan) -> bool:
        chosen = self.show_progress_bar if isinstance(show, UseDefault) else bool(show)
        return chosen and len(plan.pairs) > _progress.CHUNK

    def _plan(self, call: _Call) -> RerankPlan:
        if not any(call.documents):  # nothing to score: no tokenizer, no engine
            empty = [PlannedQuery(query=q, documents=(), planned=()) for q in call.queries]
            return RerankPlan(pairs=[], queries=empty, max_length=self._requested_max_length)
        plan = self.encoder.plan(
            call.queries,
            call.documents,
            instruction=call.instruction,
            max_length=self.max_length,
            long_documents=self.long_documents,
            window_overlap=self.window_overlap,
        )
        cut = [i for i, q in enumerate(plan.queries) if q.query_truncated]
        if cut:
            logger.warning(
                "the query was cut to fit max_length=%d (queries %s): its scores ignore the query's end; "
                "raise max_length or shorten the query or the instruction",
                plan.max_length,
                cut,
            )
        if any(q.instruction_truncated for q in plan.queries):
            logger.warning(
                "the instruction was cut to fit max_length=%d; raise max_length or shorten the instruction",
                plan.max_length,
            )
        return plan

    def _finish(self, call: _Call, plan: RerankPlan, output: EngineOutput) -> list[Ranking]:
        logits = validate_output(output, len(plan.pairs), self._engine.name)
        seconds = time.perf_counter() - call.started
        rankings: list[Ranking] = []
        for query in plan.queries:
            results: list[RerankResult] = []
            for index, (doc, planned) in enumerate(zip(query.documents, query.planned, strict=True)):
                seqs = planned.sequences
                best = max(range(len(seqs)), key=lambda k: logits[seqs[k]])  # first best on ties
                logit = logits[seqs[best]]
                results.append(
                    RerankResult(
                        index=index,
                        document=doc,
                        score=probability(logit),
                        logit=logit,
                        truncated=planned.truncated,
                        num_tokens=len(plan.pairs[seqs[best]].input_ids),
                        window=best if len(seqs) > 1 else None,
                        num_windows=len(seqs),
                    )
                )
            # Sorting by log-odds keeps the order exact where probabilities round to 1.0; the
            # sort is stable, so ties keep input order.
            results.sort(key=lambda r: -r.logit)
            if call.score_threshold is not None:
                results = [r for r in results if r.score >= call.score_threshold]
            if call.top_n is not None:
                results = results[: call.top_n]
            stats = RerankStats(
                pairs=query.pairs,
                tokens=query.tokens,
                truncated=sum(p.truncated for p in query.planned),
                seconds=seconds,
                engine=self._engine.name,
                query_truncated=query.query_truncated,
                instruction_truncated=query.instruction_truncated,
                duplicates=query.duplicates,
            )
            rankings.append(Ranking(results, stats))
        if plan.pairs:
            logger.debug(
                "reranked %d queries: %d sequences, %d tokens, %d truncated, %.3fs",
                len(plan.queries),
                len(plan.pairs),
                plan.tokens,
                sum(r.stats.truncated for r in rankings),
                seconds,
            )
        return rankings


def _group_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]], list[tuple[int, int]]]:
    """Queries in order of first appearance, each with its documents, and where each pair went."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (query, document) tuples, got {type(pairs).__name__}")
    groups: dict[str, int] = {}
    queries: list[str] = []
    documents: list[list[str]] = []
    where: list[tuple[int, int]] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"pair {i} must be a (query, document) tuple of two str, got {pair!r:.80}")
        query, document = pair
        if not isinstance(query, str) or not isinstance(document, str):
            raise TypeError(f"pair {i} must hold two str, got ({type(query).__name__}, {type(document).__name__})")
        g = groups.setdefault(query, len(queries))
        if g == len(queries):
            queries.append(query)
            documents.append([])
        where.append((g, len(documents[g])))
        documents[g].append(document)
    return queries, documents, where


def _pair_scores(rankings: list[Ranking], where: list[tuple[int, int]]) -> list[float]:
    by_index = [{r.index: r.score for r in ranking} for ranking in rankings]
    return [by_index[g][j] for g, j in where]
