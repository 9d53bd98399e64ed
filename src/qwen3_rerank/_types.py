"""Result and engine-boundary types (frozen, keyword-only dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._scores import probability

__all__ = ["EncodedPair", "EngineOutput", "Ranking", "RerankResult", "RerankStats"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankResult:
    """One scored document.

    Attributes:
        index: Position of the document in the list the caller passed.
        document: The caller's document text, unchanged (never the truncated or templated text).
        score: P("yes") in [0, 1]: the model's probability that the document meets the query.
        logit: The log-odds ``log(P(yes) / P(no))`` (the "yes" logit minus the "no" logit).
        truncated: True if part of the document did not fit in ``max_length`` and was not scored.
            About the document only: a cut query or instruction is reported in
            :attr:`RerankStats.query_truncated` / :attr:`RerankStats.instruction_truncated`.
        num_tokens: Tokens of the scored sequence (the best window's for windowed documents).
        window: For ``long_documents="window"``, which window (0-based) gave the score; ``None``
            when the document fit in one sequence or was truncated.
        num_windows: How many windows were scored for this document (1 unless windowed).
    """

    index: int
    document: str
    score: float
    logit: float
    truncated: bool = False
    num_tokens: int = 0
    window: int | None = None
    num_windows: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankStats:
    """What one rerank call did (per query for ``rerank_many``; seconds cover the whole call).

    Attributes:
        pairs: Sequences sent to the engine for this query (windows count one each). Identical
            sequences in one call are sent once: a sequence equal to one already sent (an equal
            document, or the same pair under an equal earlier query of ``rerank_many``) is not
            counted again but in ``duplicates``. Summed over a call's queries: exactly what the
            engine scored.
        tokens: Tokens in those sequences.
        truncated: Documents that were cut to fit ``max_length``.
        seconds: Wall time of the call, tokenization and scoring included.
        engine: Name of the engine that scored.
        query_truncated: The query itself was cut (from its end) to fit ``max_length``: its scores
            ignore the end of the query (a WARNING is logged too). Raise ``max_length`` or shorten
            the query or the instruction.
        instruction_truncated: The instruction was cut (from its end) to fit ``max_length``; the
            instruction is cut before the query is.
        duplicates: Sequences identical to one already sent in the call: scored once, their
            documents share that score exactly (so equal documents keep their input order).
    """

    pairs: int = 0
    tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0
    engine: str = ""
    query_truncated: bool = False
    instruction_truncated: bool = False
    duplicates: int = 0


class Ranking(list[RerankResult]):
    """A ``list[RerankResult]`` sorted best first, with the call's :class:`RerankStats` attached.

    Behaves exactly like a list (indexing, slicing, ``len``, comparison); ``ranking.stats`` tells
    what the call cost.
    """

    __slots__ = ("stats",)

    def __init__(
        self, results: list[RerankResult] | tuple[RerankResult, ...] = (), stats: RerankStats | None = None
    ) -> None:
        super().__init__(results)
        self.stats = stats if stats is not None else RerankStats()


@dataclass(frozen=True, kw_only=True, slots=True)
class EncodedPair:
    """One sequence for an engine to score (the engine boundary).

    Attributes:
        input_ids: The complete token sequence: system prefix, instruction and query, document,
            assistant suffix. Engines that accept token ids must score exactly these.
        query_length: How many leading ids belong to the prefix + instruction/query part; every
            pair of the same query shares them (engines may reuse their KV cache).
        group: Which query of the call this pair belongs to (0-based).

    Only token ids cross the engine boundary: an engine that must send text (a server's /score
    or /rerank endpoint) renders it from these ids itself.
    """

    input_ids: list[int]
    query_length: int
    group: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineOutput:
    """What an engine returns for a list of :class:`EncodedPair`, in the same order.

    Attributes:
        logits: The log-odds ``log(P(yes) / P(no))`` per pair: the one form of a score that
            crosses the engine boundary (an engine whose server answers probabilities converts
            them with :func:`qwen3_rerank._scores.log_odds`).
        prompt_tokens: Tokens the engine reports having processed (servers), if known.
        extra: Engine-specific details of the call (e.g. which server endpoint answered).
    """

    logits: list[float]
    prompt_tokens: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def scores(self) -> list[float]:
        """P("yes") per pair, derived from :attr:`logits`."""
        return [probability(v) for v in self.logits]
