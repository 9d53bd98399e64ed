"""Token-exact, template-safe construction of the sequences an engine scores.

Every sequence is ``prefix + query_part + document_part + suffix`` where

* ``prefix``/``suffix`` are :data:`~qwen3_rerank.prompts.SYSTEM_PREFIX` and
  :data:`~qwen3_rerank.prompts.ASSISTANT_SUFFIX`, encoded with control tokens recognised;
* ``query_part`` is ``"<Instruct>: …\\n<Query>: …\\n"`` and ``document_part`` is
  ``"<Document>: …"``, both encoded with the plain tokenizer (user text never becomes a
  control token).

Splitting the model card's single body string at ``"\\n<Document>"`` gives the same ids as
encoding it whole: Qwen's pre-tokenizer never lets a piece run from a newline into the next
non-space character, and the BPE never merges across pieces (a test checks this on many strings).

Truncation policy (``max_length`` counts every token of the sequence):

1. The prefix and the suffix are never cut, and neither is the ``<Document>:`` label.
2. If everything fits, nothing is cut.
3. Otherwise the document is cut from its end. The query (with its instruction) is cut only when
   it alone would leave the document less than half of the room left after the template; it is
   then cut from its end to that half, keeping its closing newline, and the document gets the
   rest. This mirrors the model card (which cuts the end of the body) while never letting a
   long query squeeze out the document entirely.

With ``long_documents="window"`` a document over its room is not cut: its tokens are split into
overlapping windows that each fit, every window is scored, and the best one counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import prompts
from ._exceptions import ConfigurationError
from ._tokenizer import Tokenizer
from ._types import EncodedPair

__all__ = ["PairEncoder", "PlannedDocument"]

MIN_DOCUMENT_TOKENS = 8
"""Smallest room (after the ``<Document>:`` label) that ``max_length`` must leave a document."""


@dataclass(frozen=True, slots=True)
class PlannedDocument:
    """How one document of one query became engine sequences (internal bookkeeping)."""

    first: int  # index of its first EncodedPair in the flat list
    count: int  # number of sequences (windows) for it
    truncated: bool


class PairEncoder:
    """Builds engine sequences from queries and documents with a given tokenizer.

    Args:
        tokenizer: The model's tokenizer (a :class:`~qwen3_rerank.Tokenizer`: template and plain
            halves, e.g. a :class:`~qwen3_rerank.Qwen3Tokenizer`).

    Example:
        >>> enc = PairEncoder(tokenizer)                                # doctest: +SKIP
        >>> pairs, plan = enc.encode("what is BM25?", ["BM25 is ..."], max_length=512)  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prefix_ids = tokenizer.encode_template(prompts.SYSTEM_PREFIX)
        self.suffix_ids = tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)
        self.header_ids = tokenizer.encode_plain([prompts.DOCUMENT_HEADER])[0]
        self.newline_ids = tokenizer.encode_plain(["\n"])[0]
        self.yes_id = tokenizer.token_id(prompts.YES_TOKEN)
        self.no_id = tokenizer.token_id(prompts.NO_TOKEN)

    @property
    def template_length(self) -> int:
        """Tokens that every sequence spends on the fixed template (prefix, suffix, label)."""
        return len(self.prefix_ids) + len(self.suffix_ids) + len(self.header_ids)

    def min_max_length(self) -> int:
        """The smallest ``max_length`` that leaves room for a query and a document."""
        # fit_query may give the query half the room; the other half must still hold the label
        # and MIN_DOCUMENT_TOKENS of the document.
        return len(self.prefix_ids) + len(self.suffix_ids) + 2 * (len(self.header_ids) + MIN_DOCUMENT_TOKENS) + 2

    def check_max_length(self, max_length: int) -> None:
        smallest = self.min_max_length()
        if max_length < smallest:
            raise ConfigurationError(
                f"max_length={max_length} leaves no room for text: the Qwen3-Reranker template alone "
                f"takes {self.template_length} tokens. Use max_length >= {smallest} (the model card "
                "uses 8192)."
            )

    def encode_queries(self, queries: Sequence[str], instruction: str | None) -> list[list[int]]:
        return self.tokenizer.encode_plain([prompts.format_query(q, instruction) for q in queries])

    def encode_documents(self, documents: Sequence[str]) -> list[list[int]]:
        """Encode ``"<Document>: {doc}"`` for every document in one batch call."""
        encoded = self.tokenizer.encode_plain([prompts.format_document(d) for d in documents])
        n = len(self.header_ids)
        for ids in encoded:
            if ids[:n] != self.header_ids:  # pragma: no cover - holds for every byte-level BPE
                raise ConfigurationError(
                    "this tokenizer merges the '<Document>:' label with the document text; it is "
                    "not a Qwen3 tokenizer"
                )
        return encoded

    def fit_query(self, query_ids: list[int], longest_document: int, max_length: int) -> tuple[list[int], bool]:
        """Apply the query half of the truncation policy; returns (ids, was_cut)."""
        room = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if len(query_ids) + longest_document <= room:
            return query_ids, False
        # The document keeps at least half the room, or all it needs, and never less than its
        # label plus MIN_DOCUMENT_TOKENS.
        doc_need = max(longest_document, len(self.header_ids) + MIN_DOCUMENT_TOKENS)
        query_room = max(room // 2, room - doc_need)
        if len(query_ids) <= query_room:
            return query_ids, False
        keep = query_room - len(self.newline_ids)
        return query_ids[:keep] + self.newline_ids, True

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
        """Build the sequences for one query and its documents.

        ``query_ids`` must already fit (see :meth:`fit_query`).
        """
        head = self.prefix_ids + query_ids
        room = max_length - len(head) - len(self.suffix_ids)  # for "<Document>: …"
        n_header = len(self.header_ids)
        body_room = room - n_header
        if body_room < MIN_DOCUMENT_TOKENS:  # pragma: no cover - guarded by fit_query
            raise ConfigurationError(f"max_length={max_length} leaves the document no room")
        pairs: list[EncodedPair] = []
        plan: list[PlannedDocument] = []
        for ids in document_ids:
            first = len(pairs)
            if len(ids) <= room:
                pairs.append(self._pair(head, ids, group))
                plan.append(PlannedDocument(first, 1, False))
                continue
            body = ids[n_header:]
            if not windows:
                kept = ids[:room]
                pairs.append(self._pair(head, kept, group))
                plan.append(PlannedDocument(first, 1, True))
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
            plan.append(PlannedDocument(first, len(pairs) - first, False))
        return pairs, plan

    def _pair(self, head: list[int], doc_ids: list[int], group: int) -> EncodedPair:
        return EncodedPair(input_ids=head + doc_ids + self.suffix_ids, query_length=len(head), group=group)
