"""The one narrow interface every engine implements."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import InvalidScoreError
from .._types import EncodedPair, EngineOutput

if TYPE_CHECKING:
    from .._tokenizer import Qwen3Tokenizer

__all__ = ["Engine", "prefix_groups", "validate_output"]


class Engine(abc.ABC):
    """Scores token sequences built by the core; knows nothing of sorting, ``top_n`` or results.

    Subclasses implement :meth:`score` and a *really* asynchronous :meth:`ascore` (an async HTTP
    client, an async engine, or a dedicated worker thread for compute-bound local models; never
    the sync method called on the event loop).
    """

    name: ClassVar[str] = "engine"

    #: The longest sequence the engine accepts, if it knows (``None``: only ``max_length`` applies).
    max_model_len: int | None = None

    #: Whether the engine needs ``EncodedPair.query_text``/``document_text`` (text-only servers).
    needs_text: bool = False

    #: Whether building a call's token ids may wait on I/O (a tokenizer still to be fetched, or
    #: one that tokenizes over HTTP). The async API then builds them on a worker thread, so the
    #: caller's event loop never waits on that I/O.
    plan_may_block: bool = False

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Qwen3Tokenizer:
        """The tokenizer that builds this engine's input ids."""

    @abc.abstractmethod
    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        """Score every pair; P("yes") in the same order."""

    @abc.abstractmethod
    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        """Asynchronous :meth:`score`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources (model memory, connections)."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prefix_groups(pairs: Sequence[EncodedPair]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``pairs`` by their query prefix ids (``input_ids[:query_length]``).

    Only pairs with a prefix and a document part after it are grouped; keyed by the ids
    themselves, so pairs share only what really is identical. Engines use it to compute a
    prefix once (``TransformersEngine``) or to keep a query's pairs together (``VLLMEngine``).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, pair in enumerate(pairs):
        n = pair.query_length
        if 0 < n < len(pair.input_ids):
            groups.setdefault(tuple(pair.input_ids[:n]), []).append(i)
    return groups


def validate_output(output: EngineOutput, expected: int, engine: str) -> EngineOutput:
    """Refuse a wrong count, a non-finite value or a probability outside [0, 1]."""
    if len(output.scores) != expected:
        raise InvalidScoreError(
            f"engine {engine!r} returned {len(output.scores)} scores for {expected} sequences; "
            "nothing was ranked rather than rank a partial result"
        )
    for i, s in enumerate(output.scores):
        if not (isinstance(s, (int, float)) and math.isfinite(s) and 0.0 <= s <= 1.0):
            raise InvalidScoreError(
                f"engine {engine!r} returned score {s!r} for sequence {i}; a score must be a finite "
                "probability in [0, 1]. This usually means numerical trouble (fp16 overflow: use "
                "dtype='bfloat16' or 'float32') or a server that is not a Qwen3 reranker."
            )
    if output.logits is not None:
        if len(output.logits) != expected:
            raise InvalidScoreError(f"engine {engine!r} returned {len(output.logits)} logits for {expected} sequences")
        for i, v in enumerate(output.logits):
            if isinstance(v, float) and math.isnan(v):
                raise InvalidScoreError(f"engine {engine!r} returned logit NaN for sequence {i}")
    return output
