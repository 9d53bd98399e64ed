"""The one narrow interface every engine implements."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import InvalidScoreError
from .._types import EncodedPair, EngineOutput

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["Engine", "prefix_groups", "validate_output"]


class Engine(abc.ABC):
    """Scores token sequences built by the core; knows nothing of sorting, ``top_n`` or results.

    Subclasses implement :meth:`score` and a *really* asynchronous :meth:`ascore` (an async HTTP
    client, an async engine, or a dedicated worker thread for compute-bound local models; never
    the sync method called on the event loop).

    Every engine provides the typed attributes below (callers never probe with ``getattr``).

    Closed contract: :meth:`close` releases everything the engine owns (model memory, worker
    threads, sync and async clients) and is idempotent; any :meth:`score` / :meth:`ascore` after it
    raises :class:`~qwen3_rerank.EngineError` saying the engine is closed (it never reopens
    silently, never fails with an unrelated ``TypeError``/``AttributeError``, and starts no thread).
    """

    name: ClassVar[str] = "engine"
    """Short engine name (``"transformers"``, ``"vllm"``, ``"remote"``), reported in ``RerankStats``."""

    # -- facts about the engine, read by the factory, the CLI and `qwen3-rerank info` -----------
    extra: ClassVar[str] = "all"
    """The extra that installs what the engine needs: ``pip install 'qwen3-rerank[EXTRA]'``."""

    packages: ClassVar[tuple[str, ...]] = ()
    """Import names of the packages the engine needs (``qwen3-rerank info`` reports them)."""

    uses_server: ClassVar[bool] = False
    """It scores on a server: it takes ``base_url`` and ``api_key`` (from their environment
    variables when not given), it has no default model (it can ask the server), it takes no
    ``dtype`` (the server has one), and its calls wait on the network (the CLI calls it through
    the async API so that Ctrl-C cancels what is in flight)."""

    uses_device: ClassVar[bool] = False
    """It takes a ``device`` option (``--device`` on the command line)."""

    option_choices: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    """The documented values of options of this engine's own (checked before anything loads)."""

    model_name: str = ""
    """The model id or path, or the server's served model name; ``""`` if unknown."""

    dtype: str | None = None
    """The weights' dtype as a name (``"float32"``, ``"bfloat16"``, ``"float16"``); ``None`` if
    unknown (e.g. a remote server that does not say)."""

    max_model_len: int | None = None
    """The longest sequence the engine accepts, if it knows (``None``: only ``max_length``
    applies). May be a property that asks a server on first read: the core reads it lazily."""

    plan_may_block: bool = False
    """Whether building a call's token ids may wait on I/O (a tokenizer still to be fetched, or
    one that tokenizes over HTTP). The async API then builds them on a worker thread, so the
    caller's event loop never waits on that I/O."""

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Tokenizer:
        """The tokenizer that builds this engine's input ids."""

    @abc.abstractmethod
    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        """Score every pair; the log-odds of "yes" in the same order (:class:`EngineOutput`)."""

    @abc.abstractmethod
    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        """Asynchronous :meth:`score`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything the engine owns (model memory, threads, connections); idempotent.

        After it, :meth:`score` and :meth:`ascore` raise :class:`~qwen3_rerank.EngineError`.
        """

    async def aclose(self) -> None:
        """Asynchronous :meth:`close` (engines with async clients close them on the caller's loop)."""
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


def validate_output(output: EngineOutput, expected: int, engine: str) -> list[float]:
    """The output's log-odds as Python floats; refuses a wrong count, a non-number or NaN.

    Any real number type is accepted (``float``, ``int``, ``numpy.float32`` …); ``bool`` is not.
    ``±inf`` is a valid log-odds (a probability of exactly 1 or 0 from a server).
    """
    logits = output.logits
    if len(logits) != expected:
        raise InvalidScoreError(
            f"engine {engine!r} returned {len(logits)} scores for {expected} sequences; "
            "nothing was ranked rather than rank a partial result"
        )
    checked: list[float] = []
    for i, v in enumerate(logits):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(float(v)):
            raise InvalidScoreError(
                f"engine {engine!r} returned log-odds {v!r} for sequence {i}; a score must be a real "
                "number. NaN usually means numerical trouble (fp16 overflow: use dtype='bfloat16' or "
                "'float32') or a server that is not a Qwen3 reranker."
            )
        checked.append(float(v))
    return checked
