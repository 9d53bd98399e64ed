"""Pure helpers shared by the sync and async paths of :class:`~langchain_qwen3_rerank.Qwen3Rerank`:
inputs checked, a batch planned (one engine call per distinct instruction), copies made, stats
reported."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import get_callback_manager_for_config
from typing_extensions import NotRequired, TypedDict

from qwen3_rerank import Ranking, Reranker, settings

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


has_credentials, redacted = settings.has_credentials, settings.redacted


def build(r: Any) -> Reranker:
    key = r.api_key.get_secret_value() if r.api_key is not None else None
    return settings.build_integration_reranker(
        engine=r.engine, model=r.model, base_url=r.base_url, api_key=key, engine_options=r.engine_options
    )


def hint_misplaced_keywords(cls: Any, data: Any) -> Any:
    settings.check_keywords(cls.model_fields, data)
    return data


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


def texts(docs: list[Document]) -> list[str]:
    return [d.page_content for d in docs]


def first(ranking: Ranking, top_n: int | None) -> Ranking:
    return Ranking(ranking[:top_n], ranking.stats)


# -- a batch: one engine call per distinct instruction ---------------------------------------------
@dataclass
class Request:
    """One valid Runnable input."""

    query: str
    docs: list[Document]
    top_n: int | None
    instruction: str | None


def parse_input(r: Any, item: Any) -> Request:
    if not isinstance(item, Mapping) or "documents" not in item:
        raise ValueError(
            "Qwen3Rerank takes {'query': str, 'documents': [Document | str, ...], 'top_n'?, 'instruction'?} "
            f"as input, got {type(item).__name__}" + (f" with keys {sorted(item)}" if isinstance(item, Mapping) else "")
        )
    top_n = settings.check_top_n(item["top_n"]) if "top_n" in item else r.top_n
    own = item.get("instruction")
    if own is not None and not isinstance(own, str):
        raise TypeError(f"input['instruction'] must be a str, got {type(own).__name__}")
    docs = as_documents(item["documents"], allow_text=True)
    return Request(check_query(item.get("query")), docs, top_n, own or r.instruction)


def plan_batch(r: Any, inputs: list[Any]) -> tuple[dict[Any, Any], dict[str | None, list[Any]]]:
    """Each input's entry (its exception, or its request with an empty ranking, keyed by the
    compressor and the input), and the keys of each distinct instruction's one engine call."""
    entries: dict[Any, Any] = {}
    calls: dict[str | None, list[Any]] = {}
    for item in inputs:
        key = (id(r), id(item))
        if key in entries:
            continue
        try:
            request = parse_input(r, item)
        except (TypeError, ValueError) as exc:
            entries[key] = exc
            continue
        entries[key] = (request, Ranking())
        if request.docs:  # nothing to score: no engine built
            calls.setdefault(request.instruction, []).append(key)
    return entries, calls


def call_args(r: Any, entries: dict[Any, Any], keys: list[Any], instruction: str | None) -> tuple[Any, ...]:
    requests = [entries[k][0] for k in keys]
    options = {"top_n": None, "instruction": instruction, "score_threshold": r.score_threshold}
    return [q.query for q in requests], [texts(q.docs) for q in requests], options


def settle(entries: dict[Any, Any], keys: list[Any], rankings: Any) -> None:
    for n, key in enumerate(keys):  # an engine failure fails every input of that call
        entries[key] = rankings if isinstance(rankings, Exception) else (entries[key][0], rankings[n])


def score_batch(r: Any, inputs: list[Any]) -> dict[Any, Any]:
    """The entries of :func:`plan_batch`, scored: ONE ``rerank_many`` per instruction."""
    entries, calls = plan_batch(r, inputs)
    for instruction, keys in calls.items():
        queries, docs, options = call_args(r, entries, keys, instruction)
        try:
            rankings: Any = r.client.rerank_many(queries, docs, **options)
        except Exception as exc:
            rankings = exc
        settle(entries, keys, rankings)
    return entries


async def ascore_batch(r: Any, inputs: list[Any]) -> dict[Any, Any]:
    """Asynchronous :func:`score_batch`: one ``arerank_many`` per instruction."""
    entries, calls = plan_batch(r, inputs)
    for instruction, keys in calls.items():
        queries, docs, options = call_args(r, entries, keys, instruction)
        try:
            rankings: Any = await r.client.arerank_many(queries, docs, **options)
        except Exception as exc:
            rankings = exc
        settle(entries, keys, rankings)
    return entries


def take(entries: dict[Any, Any] | None, r: Any, item: Any) -> tuple[Request, Ranking] | None:
    """This input's share of a scored batch (its exception raised); ``None`` if not in one."""
    entry = entries.get((id(r), id(item))) if entries is not None else None
    if isinstance(entry, Exception):
        raise entry
    return entry


# -- results, runs and stats events ------------------------------------------------------------------
def scored_copies(docs: list[Document], ranking: Ranking, *, windows: bool) -> list[Document]:
    """Copies of the ranked documents carrying their scores; the caller's objects stay untouched.

    The copy and its metadata dict are new (shallow copies): values the caller put in metadata
    (locks, clients, file handles) are shared, never copied, so they cannot make the call fail.
    """
    out = []
    for res in ranking:
        metadata = dict(docs[res.index].metadata)
        metadata.update(relevance_score=res.score, rerank_logit=res.logit, rerank_truncated=res.truncated)
        if windows:
            metadata.update(rerank_window=res.window, rerank_num_windows=res.num_windows)
        out.append(docs[res.index].model_copy(update={"metadata": metadata}))
    return out


def _event(r: Any, docs: list[Document], ranking: Ranking, config: RunnableConfig) -> tuple[list[Document], Any]:
    out = scored_copies(docs, ranking, windows=r.client.long_documents == "window") if docs else []
    # Custom events belong to a run: inside a retriever or chain run there is one; a bare call has nobody to tell.
    has_run = bool(docs) and get_callback_manager_for_config(ensure_config(config)).parent_run_id is not None
    data = {**dataclasses.asdict(ranking.stats), "documents": len(docs), "returned": len(out)}
    return out, data if has_run else None


def finish(r: Any, docs: list[Document], ranking: Ranking, config: RunnableConfig) -> list[Document]:
    out, data = _event(r, docs, ranking, config)
    if data is not None:
        dispatch_custom_event(STATS_EVENT, data, config=config)
    return out


async def afinish(r: Any, docs: list[Document], ranking: Ranking, config: RunnableConfig) -> list[Document]:
    out, data = _event(r, docs, ranking, config)
    if data is not None:
        await adispatch_custom_event(STATS_EVENT, data, config=ensure_config(config))
    return out
