"""Progress by pairs for calls that take seconds (``show_progress_bar=True``, as in sentence-transformers).

Off by default: a library does not write to its caller's terminal unless asked. When on, a call's
sequences go to the engine in runs of :data:`CHUNK` (so that the bar can move), drawn with tqdm
(installed with huggingface-hub, a core dependency) on stderr. A call of one run is one engine call,
as without the bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._types import EncodedPair, EngineOutput

__all__ = ["CHUNK", "ascore", "score"]

CHUNK = 1024
"""Sequences per engine call while a progress bar is shown."""


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=" pairs", desc="reranking")


def _join(outputs: list[EngineOutput]) -> EngineOutput:
    tokens = [o.prompt_tokens for o in outputs]
    total = sum(t for t in tokens if t is not None) if all(t is not None for t in tokens) else None
    return EngineOutput(logits=[v for o in outputs for v in o.logits], prompt_tokens=total)


def score(engine: Any, pairs: Sequence[EncodedPair]) -> EngineOutput:
    """``engine.score(pairs)`` in runs of :data:`CHUNK`, moving a bar after each."""
    outputs = []
    with _bar(len(pairs)) as bar:
        for start in range(0, len(pairs), CHUNK):
            run = pairs[start : start + CHUNK]
            outputs.append(engine.score(run))
            bar.update(len(run))
    return _join(outputs)


async def ascore(engine: Any, pairs: Sequence[EncodedPair], call: Any) -> EngineOutput:
    """The async :func:`score`: ``await call(engine, run)`` per run."""
    outputs = []
    with _bar(len(pairs)) as bar:
        for start in range(0, len(pairs), CHUNK):
            run = pairs[start : start + CHUNK]
            outputs.append(await call(engine, run))
            bar.update(len(run))
    return _join(outputs)
