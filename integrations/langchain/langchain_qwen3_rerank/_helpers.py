"""Pure helpers shared by the sync and async paths of :class:`~langchain_qwen3_rerank.Qwen3Rerank`.

Inputs are checked here, batches are planned here (one engine call per distinct instruction),
results become copies of the caller's documents here, and a batch's runs are opened and closed
here with langchain_core's public config and callback-manager functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, ensure_config, get_config_list, patch_config
from langchain_core.runnables.config import get_async_callback_manager_for_config, get_callback_manager_for_config
from typing_extensions import NotRequired, TypedDict

from qwen3_rerank import Ranking, RerankStats, settings

STATS_EVENT = "qwen3_rerank_stats"
"""Name of the custom callback event that reports what each rerank cost.

Its data is a dict: every field of :class:`qwen3_rerank.RerankStats` (``pairs``, ``tokens``,
``truncated``, ``seconds``, ``engine``, ``query_truncated``, ``instruction_truncated``,
``duplicates``), ``documents`` (candidates in) and ``returned`` (documents out).
Handlers receive it in ``on_custom_event``; ``astream_events`` shows it as ``on_custom_event``.
"""


class RerankInput(TypedDict):
    """Input of :class:`Qwen3Rerank` used as a Runnable."""

    query: str
    """The search query."""
    documents: Sequence[Document | str]
    """The candidates (``Document`` objects, or plain strings that become new ``Document`` s)."""
    top_n: NotRequired[int | None]
    """Documents to return for this input (``None``: all); default: the compressor's ``top_n``."""
    instruction: NotRequired[str | None]
    """Task instruction for this input; default: the compressor's ``instruction``."""


class _Default:
    """The value of a per-call option left out: the compressor's own setting applies."""

    def __repr__(self) -> str:
        return "<the compressor's setting>"


DEFAULT: Any = _Default()


check_top_n = settings.check_top_n  # 0 is refused: it means "all" to some APIs, "none" to others


def check_query(query: Any) -> str:
    if query is None:
        raise ValueError("query is missing: pass the search query as a str")
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    return query


def as_documents(documents: Any, *, allow_text: bool) -> list[Document]:
    """The caller's items as Documents (strings and ``{"text": ...}`` dicts become new ones)."""
    if documents is None:
        raise ValueError("documents is missing: pass a list of langchain Document objects (an empty list is fine)")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of Document or str, got {type(documents).__name__}")
    docs = []
    for i, d in enumerate(documents):
        if isinstance(d, Document):
            docs.append(d)
        elif allow_text and isinstance(d, str):
            docs.append(Document(page_content=d))
        elif allow_text and isinstance(d, Mapping) and isinstance(d.get("text"), str):
            docs.append(Document(page_content=d["text"]))
        else:
            kinds = "a langchain Document, a str or a dict with a 'text' str" if allow_text else "a langchain Document"
            raise TypeError(f"document {i} must be {kinds}, got {type(d).__name__}")
    return docs


def scored_copies(docs: list[Document], ranking: Ranking, *, windows: bool) -> list[Document]:
    """Copies of the ranked documents carrying their scores; the caller's objects stay untouched.

    The copy and its metadata dict are new (shallow copies): values the caller put in metadata
    (locks, clients, file handles) are shared, never copied, so they cannot make the call fail.
    """
    out = []
    for r in ranking:
        metadata = dict(docs[r.index].metadata)
        metadata.update(relevance_score=r.score, rerank_logit=r.logit, rerank_truncated=r.truncated)
        if windows:
            metadata.update(rerank_window=r.window, rerank_num_windows=r.num_windows)
        out.append(docs[r.index].model_copy(update={"metadata": metadata}))
    return out


# -- batches ------------------------------------------------------------------------------------
@dataclass
class Request:
    """One valid Runnable input with documents."""

    slot: int
    query: str
    docs: list[Document]
    top_n: int | None
    instruction: str | None


@dataclass
class Batch:
    """The inputs of ``batch``/``abatch``: bad ones are their exception, good ones are grouped so
    that each distinct instruction is one engine call (usually there is one)."""

    outputs: list[Any]
    calls: dict[str | None, list[Request]] = field(default_factory=dict)

    @classmethod
    def parse(cls, inputs: list[Any], *, top_n: int | None, instruction: str | None) -> Batch:
        batch = cls(outputs=[])
        for slot, item in enumerate(inputs):
            try:
                request = parse_input(slot, item, top_n=top_n, instruction=instruction)
            except (TypeError, ValueError) as exc:
                batch.outputs.append(exc)
                continue
            batch.outputs.append([])
            if request.docs:
                batch.calls.setdefault(request.instruction, []).append(request)
        return batch


def parse_input(slot: int, item: Any, *, top_n: int | None, instruction: str | None) -> Request:
    if not isinstance(item, Mapping) or "documents" not in item:
        raise ValueError(
            "Qwen3Rerank takes {'query': str, 'documents': [Document | str, ...], 'top_n'?, 'instruction'?} "
            f"as input, got {type(item).__name__}" + (f" with keys {sorted(item)}" if isinstance(item, Mapping) else "")
        )
    chosen = check_top_n(item["top_n"]) if "top_n" in item else top_n
    own = item.get("instruction")
    if own is not None and not isinstance(own, str):
        raise TypeError(f"input['instruction'] must be a str, got {type(own).__name__}")
    query = check_query(item.get("query"))
    return Request(slot, query, as_documents(item["documents"], allow_text=True), chosen, own or instruction)


def call_args(requests: list[Request]) -> tuple[list[str], list[list[str]]]:
    return [r.query for r in requests], [texts(r.docs) for r in requests]


def first(ranking: Ranking, top_n: int | None) -> Ranking:
    return Ranking(ranking[:top_n], ranking.stats)


def most(requests: list[Request]) -> int:
    return max(len(r.docs) for r in requests)


def texts(docs: list[Document]) -> list[str]:
    return [d.page_content for d in docs]


# -- runs and stats events ------------------------------------------------------------------------
def event_data(stats: RerankStats, documents: int, returned: int) -> dict[str, Any]:
    """Every field of the call's RerankStats, plus how many documents came in and went out."""
    return {**dataclasses.asdict(stats), "documents": documents, "returned": returned}


def _has_parent_run(config: RunnableConfig | None) -> bool:
    # Custom events belong to a run: inside a retriever or chain run (explicit callbacks or the
    # current run's context) there is one; a bare direct call has nobody to tell.
    return get_callback_manager_for_config(ensure_config(config)).parent_run_id is not None


def report(stats: RerankStats, documents: int, returned: int, config: RunnableConfig | None) -> None:
    if _has_parent_run(config):
        dispatch_custom_event(STATS_EVENT, event_data(stats, documents, returned), config=config)


async def areport(stats: RerankStats, documents: int, returned: int, config: RunnableConfig | None) -> None:
    if _has_parent_run(config):
        await adispatch_custom_event(STATS_EVENT, event_data(stats, documents, returned), config=ensure_config(config))


# Runs of a batch, as Runnable.batch makes them, through langchain_core's public config and
# callback-manager functions: each input gets its own chain run; the work sees each run's child
# config (so stats events land in that input's run) and runs ONCE for all inputs.
def run_batch(
    runnable: Any, inputs: list[Any], config: Any, return_exceptions: bool, work: Callable[..., list[Any]]
) -> list[Any]:
    if not inputs:
        return []
    configs = get_config_list(config, len(inputs))
    runs = [
        get_callback_manager_for_config(c).on_chain_start(
            None, x, name=c.get("run_name") or runnable.get_name(), run_id=c.pop("run_id", None)
        )
        for c, x in zip(configs, inputs, strict=True)
    ]
    try:
        outputs = work(inputs, [patch_config(c, callbacks=r.get_child()) for c, r in zip(configs, runs, strict=True)])
    except Exception as exc:
        for run in runs:
            run.on_chain_error(exc)
        if return_exceptions:
            return [exc for _ in inputs]
        raise
    for run, out in zip(runs, outputs, strict=True):
        run.on_chain_error(out) if isinstance(out, Exception) else run.on_chain_end(out)
    return _outputs(outputs, return_exceptions)


async def arun_batch(
    runnable: Any, inputs: list[Any], config: Any, return_exceptions: bool, work: Callable[..., Awaitable[list[Any]]]
) -> list[Any]:
    if not inputs:
        return []
    configs = get_config_list(config, len(inputs))
    runs = [
        await get_async_callback_manager_for_config(c).on_chain_start(
            None, x, name=c.get("run_name") or runnable.get_name(), run_id=c.pop("run_id", None)
        )
        for c, x in zip(configs, inputs, strict=True)
    ]
    try:
        outputs = await work(
            inputs, [patch_config(c, callbacks=r.get_child()) for c, r in zip(configs, runs, strict=True)]
        )
    except Exception as exc:
        for run in runs:
            await run.on_chain_error(exc)
        if return_exceptions:
            return [exc for _ in inputs]
        raise
    for run, out in zip(runs, outputs, strict=True):
        await (run.on_chain_error(out) if isinstance(out, Exception) else run.on_chain_end(out))
    return _outputs(outputs, return_exceptions)


def _outputs(outputs: list[Any], return_exceptions: bool) -> list[Any]:
    first_error = next((out for out in outputs if isinstance(out, Exception)), None)
    if first_error is not None and not return_exceptions:
        raise first_error
    return outputs
