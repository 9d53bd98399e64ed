"""Pure helpers shared by the sync and async paths of :class:`~langchain_qwen3_rerank.Qwen3Rerank`:
every call is a :class:`Request` (inputs checked), requests are scored with one engine call per
distinct instruction, copies made, stats reported."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import get_callback_manager_for_config
from typing_extensions import NotRequired, TypedDict

from qwen3_rerank import Ranking, settings
from qwen3_rerank.settings import USE_DEFAULT

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


@dataclass
class Request:
    """One checked rerank, and its ranking (or what failed it) once scored."""

    query: str
    docs: list[Document]
    top_n: int | None
    instruction: str | None
    ranking: Ranking | Exception = dataclasses.field(default_factory=Ranking)

    def results(self) -> Ranking:
        """The best ``top_n`` results; raises what failed the request."""
        if isinstance(self.ranking, Exception):
            raise self.ranking
        return Ranking(self.ranking[: self.top_n], self.ranking.stats)


def request(r: Any, query: Any, documents: Any, top_n: Any, instruction: Any, *, allow_text: bool) -> Request:
    """A call's arguments checked, the compressor's defaults filled in."""
    if query is None:
        raise ValueError("query is missing: pass the search query as a str")
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
    top_n = r.top_n if top_n is USE_DEFAULT else settings.check_top_n(top_n)
    return Request(query, as_documents(documents, allow_text=allow_text), top_n, instruction or r.instruction)


def as_documents(documents: Any, *, allow_text: bool) -> list[Document]:
    """The caller's items as Documents (strings and ``{"text": ...}`` dicts become new ones)."""
    if documents is None:
        raise ValueError("documents is missing: pass a list of langchain Document objects (an empty list is fine)")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of Document or str, got {type(documents).__name__}")
    kinds = "a langchain Document, a str or a dict with a 'text' str" if allow_text else "a langchain Document"
    docs = []
    for i, d in enumerate(documents):
        text: Any = d.get("text") if isinstance(d, Mapping) else d
        if not isinstance(d, Document) and not (allow_text and isinstance(text, str)):
            raise TypeError(f"document {i} must be {kinds}, got {type(d).__name__}")
        docs.append(d if isinstance(d, Document) else Document(page_content=text))
    return docs


def parse_input(r: Any, item: Any) -> Request:
    """One Runnable input as a :class:`Request`; one that is not valid carries its error, raised in
    the input's own run (in a batch, the other inputs are still scored)."""
    try:
        if not isinstance(item, Mapping) or "documents" not in item:
            keys = f" with keys {sorted(item)}" if isinstance(item, Mapping) else ""
            raise ValueError(
                "Qwen3Rerank takes {'query': str, 'documents': [Document | str, ...], 'top_n'?, 'instruction'?} "
                f"as input, got {type(item).__name__}{keys}"
            )
        top_n, instruction = item.get("top_n", USE_DEFAULT), item.get("instruction")
        return request(r, item.get("query"), item["documents"], top_n, instruction, allow_text=True)
    except (TypeError, ValueError) as exc:
        return Request("", [], None, None, ranking=exc)


def calls(r: Any, requests: Iterable[Request]) -> Iterator[tuple[list[Request], dict[str, Any]]]:
    """The engine calls that score ``requests``: ONE ``rerank_many`` per distinct instruction (its
    requests and its arguments: every result, each request keeps its own ``top_n``). A request
    without documents needs none (no engine is built)."""
    groups: dict[str | None, list[Request]] = {}
    for q in requests:
        if q.docs:
            groups.setdefault(q.instruction, []).append(q)
    for instruction, group in groups.items():
        docs = [[d.page_content for d in q.docs] for q in group]
        options = {"top_n": None, "instruction": instruction, "score_threshold": r.score_threshold}
        yield group, {"queries": [q.query for q in group], "documents": docs, **options}


def settle(group: list[Request], rankings: Sequence[Ranking | Exception]) -> None:
    for q, ranking in zip(group, rankings, strict=True):
        q.ranking = ranking


def score(r: Any, requests: Sequence[Request]) -> Sequence[Request]:
    """Score ``requests`` (see :func:`calls`); an engine failure fails every request of its call."""
    for group, kwargs in calls(r, requests):
        try:
            settle(group, r.client.rerank_many(**kwargs))
        except Exception as exc:
            settle(group, [exc] * len(group))
    return requests


async def ascore(r: Any, requests: Sequence[Request]) -> Sequence[Request]:
    """Asynchronous :func:`score`: one ``arerank_many`` per distinct instruction."""
    for group, kwargs in calls(r, requests):
        try:
            settle(group, await r.client.arerank_many(**kwargs))
        except Exception as exc:
            settle(group, [exc] * len(group))
    return requests


# -- results and stats events ------------------------------------------------------------------------
def _copies(r: Any, request: Request, config: RunnableConfig) -> tuple[list[Document], dict[str, Any] | None]:
    """Copies of the ranked documents carrying their scores, and the stats event's data (``None``: no event).

    The copy and its metadata dict are new (shallow copies): values the caller put in metadata
    (locks, clients, file handles) are shared, never copied, so they cannot make the call fail.
    """
    ranking = request.results()
    windows = bool(ranking) and r.client.long_documents == "window"
    out = []
    for res in ranking:
        doc = request.docs[res.index]
        metadata = {**doc.metadata, "relevance_score": res.score, **settings.result_metadata(res, windows=windows)}
        out.append(doc.model_copy(update={"metadata": metadata}))
    # Custom events belong to a run: inside a retriever or chain run there is one; a bare call has nobody to tell.
    has_run = bool(request.docs) and get_callback_manager_for_config(ensure_config(config)).parent_run_id is not None
    data = {**dataclasses.asdict(ranking.stats), "documents": len(request.docs), "returned": len(out)}
    return out, data if has_run else None


def finish(r: Any, request: Request, config: RunnableConfig) -> list[Document]:
    out, data = _copies(r, request, config)
    if data is not None:
        dispatch_custom_event(STATS_EVENT, data, config=config)
    return out


async def afinish(r: Any, request: Request, config: RunnableConfig) -> list[Document]:
    out, data = _copies(r, request, config)
    if data is not None:
        await adispatch_custom_event(STATS_EVENT, data, config=ensure_config(config))
    return out
