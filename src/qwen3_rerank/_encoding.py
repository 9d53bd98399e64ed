"""Token-exact, template-safe construction of the sequences an engine scores.

Every sequence is ``prefix + instruction_part + query_part + document_part + suffix`` where

* ``prefix``/``suffix`` are :data:`~qwen3_rerank.prompts.SYSTEM_PREFIX` and
  :data:`~qwen3_rerank.prompts.ASSISTANT_SUFFIX`, encoded with control tokens recognised;
* ``instruction_part`` is ``"<Instruct>: …\\n"``, ``query_part`` is ``"<Query>: …\\n"`` and
  ``document_part`` is ``"<Document>: …"``, all encoded with the plain tokenizer (user text never
  becomes a control token).

Splitting the model card's single body string before ``"<Query>"`` and ``"<Document>"`` (each
right after a newline) gives the same ids as encoding it whole: Qwen's pre-tokenizer never lets a
piece run from a newline into the next non-space character, and the BPE never merges across
pieces (a test checks this on many strings).

:meth:`PairEncoder.plan` is the public entry point: it validates the texts, builds every sequence
of a call, and returns a :class:`RerankPlan` that says which sequences belong to which query and
document, and what was cut.

Truncation policy (``max_length`` counts every token of the sequence):

1. The prefix and the suffix are never cut, and neither are the ``<Instruct>:``, ``<Query>:`` and
   ``<Document>:`` labels nor the newlines that close the instruction and the query.
2. If everything fits, nothing is cut.
3. Otherwise the document is cut from its end. The instruction and query together are cut only
   when they alone would leave the document less than half of the room left after the template
   (or less than the longest document needs, when that is less). They are then cut to that size:
   the instruction first, from its end, down to its bare label; the query only if that is still
   not enough, from its end. A cut query is always reported (``RerankPlan`` /
   ``RerankStats.query_truncated``, and a WARNING log from the :class:`~qwen3_rerank.Reranker`),
   so two queries can never silently get the same scores because the part that differed was cut.
   A cut instruction is reported the same way (``instruction_truncated``).

With ``long_documents="window"`` a document over its room is not cut: its tokens are split into
overlapping windows that each fit, every window is scored, and the best one counts.

Identical sequences in one call (two equal documents, or the same pair under two equal queries)
appear once in :attr:`RerankPlan.pairs`: the engine scores each once and they share that score
exactly, so ties keep input order even on engines whose result depends on a row's batch position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import prompts
from ._bounded import encode_bounded
from ._exceptions import ConfigurationError
from ._tokenizer import Tokenizer
from ._types import EncodedPair

__all__ = ["PairEncoder", "PlannedDocument", "PlannedQuery", "RerankPlan", "validate_texts"]

LongDocuments = Literal["truncate", "window"]

MIN_DOCUMENT_TOKENS = 8
"""Smallest room (after the ``<Document>:`` label) that ``max_length`` must leave a document."""
MIN_QUERY_TOKENS = 8
"""Smallest room (after the bare ``<Instruct>:`` and ``<Query>:`` labels) left to the query text."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedDocument:
    """How one document became engine sequences.

    Attributes:
        sequences: Indices into :attr:`RerankPlan.pairs` of its sequences, in document order (one,
            or one per window with ``long_documents="window"``). Equal sequences share an index.
        truncated: True if the end of the document did not fit and was not scored.
    """

    sequences: tuple[int, ...]
    truncated: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedQuery:
    """One query of a plan and its documents.

    Attributes:
        query: The caller's query text, unchanged.
        documents: The caller's documents for it, unchanged.
        planned: One :class:`PlannedDocument` per document, in the same order.
        instruction_truncated: The instruction was cut (from its end) to fit ``max_length``.
        query_truncated: The query itself was cut (from its end) to fit ``max_length``; its
            scores then ignore the end of the query.
        pairs: Sequences this query added to :attr:`RerankPlan.pairs` (what the engine scores for
            it); a sequence identical to one already in the plan is not added again.
        tokens: Tokens in those sequences.
        duplicates: Sequences of this query that were identical to one already in the plan (an
            equal document, or an equal earlier query's): scored once, score shared.
    """

    query: str
    documents: tuple[str, ...]
    planned: tuple[PlannedDocument, ...]
    instruction_truncated: bool = False
    query_truncated: bool = False
    pairs: int = 0
    tokens: int = 0
    duplicates: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankPlan:
    """Every sequence one rerank call sends to its engine, and what each belongs to.

    Built by :meth:`PairEncoder.plan` (or :meth:`qwen3_rerank.Reranker.plan` with the reranker's
    settings). Score ``pairs`` with an engine (``engine.score(plan.pairs)``); the score of
    document ``j`` of query ``i`` is the best of ``plan.queries[i].planned[j].sequences``.

    Attributes:
        pairs: The distinct sequences to score, in order of first use (query by query, document
            by document, window by window).
        queries: One :class:`PlannedQuery` per query, in the caller's order.
        max_length: The ``max_length`` the sequences were built for.
    """

    pairs: list[EncodedPair]
    queries: list[PlannedQuery]
    max_length: int

    @property
    def tokens(self) -> int:
        """Tokens in :attr:`pairs`: what the engine computes."""
        return sum(len(p.input_ids) for p in self.pairs)


def check_plan_options(max_length: Any, long_documents: Any, window_overlap: Any) -> None:
    """Refuse a bad ``max_length``, ``long_documents`` or ``window_overlap`` (ValueError)."""
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    if long_documents not in ("truncate", "window"):
        raise ValueError(f"long_documents must be 'truncate' or 'window', got {long_documents!r}")
    if not isinstance(window_overlap, int) or isinstance(window_overlap, bool) or window_overlap < 0:
        raise ValueError(f"window_overlap must be an int >= 0, got {window_overlap!r}")


def validate_texts(
    queries: Sequence[str], documents: Sequence[Sequence[str]], instruction: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Check the types and the Unicode of every text before any tokenization.

    Returns the queries and document lists as new lists (the caller's are never changed).

    Raises:
        TypeError: a query, a document or the instruction is not a ``str`` (or ``documents`` is a
            single string); the message names its index.
        ValueError: a required argument is missing, the lengths do not match, or a text holds a
            lone surrogate (``"\\ud800"``, invalid Unicode that no tokenizer can encode).
    """
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(
            f"instruction must be a str or None (the default instruction), got {type(instruction).__name__}"
        )
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
        raise TypeError(f"queries must be a list of str, got {type(queries).__name__}")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence) or len(documents) != len(queries):
        raise ValueError(
            "documents must be a list with one list of documents per query "
            f"(got {len(queries)} queries and {_describe(documents)})"
        )
    single = len(queries) == 1
    for qi, query in enumerate(queries):
        if query is None:
            raise ValueError("query is missing: pass the search query as a str")
        if not isinstance(query, str):
            raise TypeError(f"query {qi} must be a str, got {type(query).__name__}")
    doc_lists = [_check_documents(docs, qi, single) for qi, docs in enumerate(documents)]
    if instruction is not None:
        _check_unicode(instruction, "the instruction")
    for qi, query in enumerate(queries):
        _check_unicode(query, "the query" if single else f"query {qi}")
    for qi, docs in enumerate(doc_lists):
        for di, doc in enumerate(docs):
            _check_unicode(doc, f"document {di}" if single else f"document {di} of query {qi}")
    return list(queries), doc_lists


class PairEncoder:
    """Builds engine sequences from queries and documents with a given tokenizer.

    Args:
        tokenizer: The model's tokenizer (a :class:`~qwen3_rerank.Tokenizer`: template and plain
            halves, e.g. a :class:`~qwen3_rerank.Qwen3Tokenizer`).

    Example:
        >>> enc = PairEncoder(tokenizer)  # doctest: +SKIP
        >>> docs = [["BM25 is a ranking function.", "Paris"]]
        >>> plan = enc.plan(["what is BM25?"], docs, max_length=512)  # doctest: +SKIP
        >>> len(plan.pairs), plan.queries[0].planned[1].truncated  # doctest: +SKIP
        (2, False)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prefix_ids = tokenizer.encode_template(prompts.SYSTEM_PREFIX)
        self.suffix_ids = tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)
        self.header_ids = tokenizer.encode_plain([prompts.DOCUMENT_HEADER])[0]
        self.newline_ids = tokenizer.encode_plain(["\n"])[0]
        self.instruction_label_ids, self.query_label_ids = tokenizer.encode_plain(["<Instruct>:", "<Query>:"])
        self.yes_id = tokenizer.token_id(prompts.YES_TOKEN)
        self.no_id = tokenizer.token_id(prompts.NO_TOKEN)

    @property
    def template_length(self) -> int:
        """Tokens that every sequence spends on the fixed template (prefix, suffix, labels)."""
        labels = len(self.instruction_label_ids) + len(self.query_label_ids) + 2 * len(self.newline_ids)
        return len(self.prefix_ids) + len(self.suffix_ids) + len(self.header_ids) + labels

    def min_max_length(self) -> int:
        """The smallest ``max_length`` that leaves room for a query and a document."""
        # The instruction and query may get half the room (down to their labels plus
        # MIN_QUERY_TOKENS); the other half must still hold the document label and
        # MIN_DOCUMENT_TOKENS of the document.
        query_min = len(self.instruction_label_ids) + len(self.query_label_ids) + 2 * len(self.newline_ids)
        half = max(query_min + MIN_QUERY_TOKENS, len(self.header_ids) + MIN_DOCUMENT_TOKENS)
        return len(self.prefix_ids) + len(self.suffix_ids) + 2 * half + 1

    def check_max_length(self, max_length: int) -> None:
        """Raise :class:`ConfigurationError` if ``max_length`` leaves no room for text."""
        smallest = self.min_max_length()
        if max_length < smallest:
            raise ConfigurationError(
                f"max_length={max_length} leaves no room for text: the Qwen3-Reranker template alone "
                f"takes {self.template_length} tokens. Use max_length >= {smallest} (the model card "
                "uses 8192)."
            )

    # -- the public planning API -----------------------------------------------------------------
    def plan(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        instruction: str | None = None,
        max_length: int,
        long_documents: LongDocuments = "truncate",
        window_overlap: int = 64,
    ) -> RerankPlan:
        """Build every sequence for ``documents[i]`` against ``queries[i]``, for one engine call.

        Args:
            queries: The queries.
            documents: One list of documents per query (an empty list is fine).
            instruction: The task instruction (``None``: the model card's default).
            max_length: Most tokens in one sequence, template included.
            long_documents: ``"truncate"`` cuts a document that does not fit (its end);
                ``"window"`` splits it into overlapping windows that each fit.
            window_overlap: Tokens shared by consecutive windows.

        Returns:
            A :class:`RerankPlan`. Nothing is cut silently: see the module docstring's truncation
            policy and the ``*_truncated`` flags.

        Raises:
            TypeError, ValueError: a bad argument (checked before anything is tokenized).
            ConfigurationError: ``max_length`` too small for the template, or ``window_overlap``
                not smaller than a window's room.
        """
        queries, doc_lists = validate_texts(queries, documents, instruction)
        check_plan_options(max_length, long_documents, window_overlap)
        if not any(doc_lists):
            return RerankPlan(pairs=[], queries=[PlannedQuery(query=q, documents=(), planned=()) for q in queries],
                              max_length=max_length)  # fmt: skip
        self.check_max_length(max_length)

        active = [i for i, docs in enumerate(doc_lists) if docs]
        instruction_ids, query_ids = self._encode_query_parts([queries[i] for i in active], instruction)
        # Truncating, no document keeps more than the room after the template; one id more says
        # that it was cut, and gives _fit_query the same decision as the whole document would.
        keep = None if long_documents == "window" else max_length - len(self.prefix_ids) - len(self.suffix_ids) + 1
        flat_ids = self.encode_documents([d for i in active for d in doc_lists[i]], max_tokens=keep)

        planned: list[PlannedQuery] = [PlannedQuery(query=q, documents=(), planned=()) for q in queries]
        pairs: list[EncodedPair] = []
        seen: dict[tuple[int, ...], int] = {}
        offset = 0
        for qids, i in zip(query_ids, active, strict=True):
            docs = doc_lists[i]
            doc_ids = flat_ids[offset : offset + len(docs)]
            offset += len(docs)
            fitted, instruction_cut, query_cut = self._fit_query(
                instruction_ids, qids, max(len(d) for d in doc_ids), max_length
            )
            local_pairs, local_plan = self.build(
                fitted, doc_ids, max_length=max_length, group=i,
                windows=long_documents == "window", window_overlap=window_overlap,
            )  # fmt: skip
            # Equal sequences go to the engine once: local index -> index in the plan's pairs.
            where: list[int] = []
            added = tokens = 0
            for pair in local_pairs:
                key = tuple(pair.input_ids)
                k = seen.get(key)
                if k is None:
                    k = seen[key] = len(pairs)
                    pairs.append(pair)
                    added += 1
                    tokens += len(pair.input_ids)
                where.append(k)
            planned[i] = PlannedQuery(
                query=queries[i],
                documents=tuple(docs),
                planned=tuple(
                    PlannedDocument(sequences=tuple(where[k] for k in p.sequences), truncated=p.truncated)
                    for p in local_plan
                ),
                instruction_truncated=instruction_cut,
                query_truncated=query_cut,
                pairs=added,
                tokens=tokens,
                duplicates=len(local_pairs) - added,
            )
        return RerankPlan(pairs=pairs, queries=planned, max_length=max_length)

    # -- building blocks ------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], instruction: str | None) -> list[list[int]]:
        """Encode ``"<Instruct>: …\\n<Query>: …\\n"`` for every query (uncut)."""
        instruction_ids, query_ids = self._encode_query_parts(queries, instruction)
        return [instruction_ids + q for q in query_ids]

    def encode_documents(self, documents: Sequence[str], *, max_tokens: int | None = None) -> list[list[int]]:
        """Encode ``"<Document>: {doc}"`` for every document (one batch call for the short ones).

        Args:
            documents: The documents.
            max_tokens: Keep at most this many ids of each (``None``: all). A long document is
                then tokenized only as far as needed: its first ``max_tokens`` ids are exactly
                those of the whole text, but the work (and memory) is bounded by what is kept. A
                long document is tokenized in pieces either way, which bounds the tokenizer's
                peak memory (``long_documents="window"`` needs every token).
        """
        encoded = encode_bounded(self.tokenizer, [prompts.format_document(d) for d in documents], max_tokens)
        n = len(self.header_ids)
        for ids in encoded:
            if ids[:n] != self.header_ids:  # pragma: no cover - holds for every byte-level BPE
                raise ConfigurationError(
                    "this tokenizer merges the '<Document>:' label with the document text; it is not a Qwen3 tokenizer"
                )
        return encoded

    def build(
        self,
        query_ids: list[int],
        document_ids: Sequence[list[int]],
        *,
        max_length: int,
        group: int = 0,
        windows: bool = False,
        window_overlap: int = 0,
    ) -> tuple[list[EncodedPair], list[PlannedDocument]]:
        """Build the sequences for one query part (instruction and query ids) and its documents.

        ``query_ids`` must already fit (:meth:`plan` cuts them by the truncation policy). Each
        returned :class:`PlannedDocument` indexes the returned pairs; nothing is deduplicated.
        """
        head = self.prefix_ids + query_ids
        room = max_length - len(head) - len(self.suffix_ids)  # for "<Document>: …"
        n_header = len(self.header_ids)
        body_room = room - n_header
        if body_room < MIN_DOCUMENT_TOKENS:
            raise ConfigurationError(
                f"max_length={max_length} leaves the document no room after a {len(query_ids)}-token "
                "query part; raise max_length"
            )
        pairs: list[EncodedPair] = []
        plan: list[PlannedDocument] = []
        for ids in document_ids:
            first = len(pairs)
            if len(ids) <= room:
                pairs.append(self._pair(head, ids, group))
                plan.append(PlannedDocument(sequences=(first,), truncated=False))
                continue
            body = ids[n_header:]
            if not windows:
                pairs.append(self._pair(head, ids[:room], group))
                plan.append(PlannedDocument(sequences=(first,), truncated=True))
                continue
            if window_overlap >= body_room:
                raise ConfigurationError(
                    f"window_overlap={window_overlap} must be smaller than the room a window has "
                    f"for document tokens ({body_room} at max_length={max_length}); lower it."
                )
            stride = body_room - window_overlap
            start = 0
            while True:
                chunk = body[start : start + body_room]
                pairs.append(self._pair(head, self.header_ids + chunk, group))
                if start + body_room >= len(body):
                    break
                start += stride
            plan.append(PlannedDocument(sequences=tuple(range(first, len(pairs))), truncated=False))
        return pairs, plan

    def _encode_query_parts(self, queries: Sequence[str], instruction: str | None) -> tuple[list[int], list[list[int]]]:
        """The instruction part's ids (shared) and each query part's ids."""
        text = prompts.format_query("", instruction)
        cut = text.rindex("<Query>:")  # split right after the instruction's newline
        encoded = self.tokenizer.encode_plain(
            [text[:cut]] + [prompts.format_query(q, instruction)[cut:] for q in queries]
        )
        return encoded[0], encoded[1:]

    def _fit_query(
        self, instruction_ids: list[int], query_ids: list[int], longest_document: int, max_length: int
    ) -> tuple[list[int], bool, bool]:
        """The query half of the truncation policy: (instruction + query ids, instruction cut, query cut)."""
        room = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        total = len(instruction_ids) + len(query_ids)
        if total + longest_document <= room:
            return instruction_ids + query_ids, False, False
        # The document keeps at least half the room, or all it needs, and never less than its
        # label plus MIN_DOCUMENT_TOKENS.
        doc_need = max(longest_document, len(self.header_ids) + MIN_DOCUMENT_TOKENS)
        query_room = max(room // 2, room - doc_need)
        if total <= query_room:
            return instruction_ids + query_ids, False, False
        nl = len(self.newline_ids)
        # The instruction goes first, from its end, down to its bare label and newline.
        floor = min(len(instruction_ids), len(self.instruction_label_ids) + nl)
        keep = max(floor, len(instruction_ids) - (total - query_room))
        instruction_cut = keep < len(instruction_ids)
        if instruction_cut:
            instruction_ids = instruction_ids[: keep - nl] + self.newline_ids
        # Then the query, from its end, only if still needed (min_max_length keeps its label).
        query_keep = query_room - len(instruction_ids)
        query_cut = len(query_ids) > query_keep
        if query_cut:
            query_ids = query_ids[: query_keep - nl] + self.newline_ids
        return instruction_ids + query_ids, instruction_cut, query_cut

    def _pair(self, head: list[int], doc_ids: list[int], group: int) -> EncodedPair:
        return EncodedPair(input_ids=head + doc_ids + self.suffix_ids, query_length=len(head), group=group)


def _describe(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{len(value)} document lists"
    return type(value).__name__


def _check_documents(documents: Sequence[str], qi: int, single: bool) -> list[str]:
    if documents is None:
        raise ValueError("documents is missing: pass a list of str (an empty list is fine)")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str, got {type(documents).__name__}")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            where = "" if single else f" of query {qi}"
            raise TypeError(f"document {i}{where} must be a str, got {type(d).__name__}; pass the document's text")
    return docs


def _check_unicode(text: str, what: str) -> None:
    """Refuse a lone surrogate (the one kind of ``str`` that UTF-8 cannot encode)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ValueError(
            f"{what} contains a lone surrogate {bad!r} at character {exc.start} (invalid Unicode, often "
            "from a broken JSON escape); replace it, e.g. text.encode('utf-8', 'replace').decode()"
        ) from None
