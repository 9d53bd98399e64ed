"""Qwen3-Reranker as a LangChain document compressor and a batched Runnable."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import Callbacks, adispatch_custom_event, dispatch_custom_event
from langchain_core.callbacks.manager import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config
from langchain_core.utils import secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self, TypedDict

from qwen3_rerank import Ranking, Reranker, RerankStats
from qwen3_rerank import settings as qwen3_settings  # `settings` names the engine fields below
from qwen3_rerank.settings import ENV_API_KEY

__all__ = ["Qwen3Reranker", "RerankInput", "STATS_EVENT"]

logger = logging.getLogger(__name__)

STATS_EVENT = "qwen3_rerank_stats"
"""Name of the custom callback event that reports what each rerank cost.

Its data is a dict: ``pairs``, ``tokens``, ``truncated``, ``seconds``, ``engine`` (from
:class:`qwen3_rerank.RerankStats`), ``documents`` (candidates in) and ``returned`` (documents out).
Handlers receive it in ``on_custom_event``; ``astream_events`` shows it as ``on_custom_event``.
"""


class RerankInput(TypedDict):
    """Input of :class:`Qwen3Reranker` used as a Runnable."""

    query: str
    """The search query."""
    documents: Sequence[Document | str]
    """The candidates (``Document`` objects, or plain strings that become new ``Document`` s)."""


class Qwen3Reranker(BaseDocumentCompressor, RunnableSerializable[RerankInput, list[Document]]):
    """Rerank documents with a Qwen3-Reranker model (any qwen3-rerank engine).

    A :class:`~langchain_core.documents.BaseDocumentCompressor` (use it in a
    ``ContextualCompressionRetriever``) and a Runnable taking ``{"query", "documents"}`` (use it in
    LCEL; ``.batch()`` / ``.abatch()`` of many queries score every pair in one engine call).

    Returned documents are copies carrying ``metadata["relevance_score"]`` (P("yes") in [0, 1])
    and ``metadata["rerank_truncated"]``; the caller's documents are never modified.

    Example:
        .. code-block:: python

            from langchain_qwen3_rerank import Qwen3Reranker

            reranker = Qwen3Reranker(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            best = reranker.compress_documents(docs, "what is BM25?")
            chain = {"query": RunnablePassthrough(), "documents": retriever} | reranker
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    top_n: int | None = Field(default=3, gt=0)
    """How many documents to return, best first (``None``: all)."""

    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop documents whose relevance score (P("yes")) is below this value."""

    instruction: str | None = None
    """Task instruction for the model (``None``: the reranker's, by default the model card's)."""

    reranker: Reranker | None = Field(default=None, exclude=True)
    """A ready :class:`qwen3_rerank.Reranker` to use. When set, the engine settings below must be
    left unset; the reranker is not closed by :meth:`close`."""

    engine: Literal["transformers", "vllm", "remote"] = "transformers"
    """Engine to build when no ``reranker`` is given: ``"transformers"`` (embedded), ``"vllm"``
    (in-process vLLM) or ``"remote"`` (a vLLM server at ``base_url``)."""

    model: str | None = None
    """Hub id or local directory of the model (default ``$QWEN3_RERANK_MODEL``, else
    ``Qwen/Qwen3-Reranker-0.6B``). For the remote engine: the served model, whose tokenizer builds
    the prompts."""

    base_url: str | list[str] | None = None
    """URL of the vLLM server (remote engine only), e.g. ``http://127.0.0.1:8000``; a list of
    URLs spreads the load over several servers. Default: ``$QWEN3_RERANK_BASE_URL``."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env(ENV_API_KEY, default=None))
    """API key of the server (remote engine only); read from ``$QWEN3_RERANK_API_KEY`` if not given."""

    engine_options: dict[str, Any] = Field(default_factory=dict)
    """Further keyword options for ``qwen3_rerank.Reranker(...)`` and its engine, e.g.
    ``{"device": "cuda", "dtype": "bfloat16", "max_length": 4096}``."""

    _built: Reranker | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": ENV_API_KEY}

    @model_validator(mode="after")
    def _check_engine_settings(self) -> Self:
        settings = {"engine", "model", "base_url", "engine_options"} & self.model_fields_set
        if self.reranker is not None and settings:
            raise ValueError(
                f"pass either reranker= or engine settings, not both (got reranker and {sorted(settings)}); "
                "configure the engine when you build the Reranker"
            )
        if self.base_url is not None and self.engine != "remote":
            raise ValueError(
                f"base_url is only used by engine='remote', got engine={self.engine!r}; set engine='remote'"
            )
        if self.reranker is None:
            # Unknown engine options, a missing or scheme-less base URL: refused now, not at the first call.
            qwen3_settings.reranker_kwargs(self.engine, model=self.model, base_url=self.base_url, **self.engine_options)
        return self

    # -- the engine ---------------------------------------------------------------------------
    @property
    def client(self) -> Reranker:
        """The :class:`qwen3_rerank.Reranker` in use (built on first use from the settings)."""
        if self.reranker is not None:
            return self.reranker
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def _build(self) -> Reranker:
        api_key = self.api_key.get_secret_value() if self.api_key is not None and self.engine == "remote" else None
        model = qwen3_settings.resolve_model(self.model, engine=self.engine)
        logger.info("building a %s reranker for %s", self.engine, model or "the served model")
        return qwen3_settings.build_reranker(
            self.engine, model=self.model, base_url=self.base_url, api_key=api_key, **self.engine_options
        )

    def close(self) -> None:
        """Release the engine this compressor built (an injected ``reranker`` is left open)."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None:
            built.close()

    # -- BaseDocumentCompressor ---------------------------------------------------------------
    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; return the best copies with their scores.

        Args:
            documents: The retrieved documents (not modified).
            query: The search query.
            callbacks: Callbacks of the calling run; they receive the :data:`STATS_EVENT`.

        Returns:
            Up to ``top_n`` copies, best first, with ``metadata["relevance_score"]``. An empty
            ``documents`` gives ``[]`` without calling the engine.
        """
        docs = _check_call(documents, query)
        if not docs:
            return []
        ranking = self.client.rerank(query, _texts(docs), **self._options(len(docs)))
        out = _apply(docs, ranking)
        _report(ranking.stats, len(docs), len(out), {"callbacks": callbacks} if callbacks is not None else None)
        return out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Asynchronous :meth:`compress_documents` through the engine's async path."""
        docs = _check_call(documents, query)
        if not docs:
            return []
        ranking = await self.client.arerank(query, _texts(docs), **self._options(len(docs)))
        out = _apply(docs, ranking)
        await _areport(ranking.stats, len(docs), len(out), {"callbacks": callbacks} if callbacks is not None else None)
        return out

    def _options(self, count: int) -> dict[str, Any]:
        # top_n=None means "all" here, while the core reads None as "the Reranker's default":
        # ask for every document explicitly.
        return {
            "top_n": self.top_n if self.top_n is not None else max(count, 1),
            "instruction": self.instruction,
            "score_threshold": self.score_threshold,
        }

    # -- Runnable: {"query", "documents"} -> list[Document] ----------------------------------
    def invoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Rerank ``input["documents"]`` for ``input["query"]``."""
        return self.batch([input], config, **kwargs)[0]

    async def ainvoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Asynchronous :meth:`invoke`."""
        return (await self.abatch([input], config, **kwargs))[0]

    def batch(
        self,
        inputs: list[RerankInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Rerank many ``{"query", "documents"}`` inputs with ONE engine call (``rerank_many``).

        Each input still gets its own run (callbacks, tracing) and its own stats event.
        """
        return self._batch_with_config(self._batch, list(inputs), config, return_exceptions=return_exceptions)

    async def abatch(
        self,
        inputs: list[RerankInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Asynchronous :meth:`batch`: one ``arerank_many`` call for all inputs."""
        return await self._abatch_with_config(self._abatch, list(inputs), config, return_exceptions=return_exceptions)

    def _batch(
        self,
        inputs: list[RerankInput],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[list[Document] | Exception]:
        parsed, work = _parse_inputs(inputs)
        rankings = self.client.rerank_many(*work.args(), **self._options(work.most)) if work.queries else []
        outputs = work.finish(parsed, rankings)
        for out, ranking, cfg, count in work.reports(outputs, rankings, config):
            _report(ranking.stats, count, len(out), cfg)
        return outputs

    async def _abatch(
        self,
        inputs: list[RerankInput],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[list[Document] | Exception]:
        parsed, work = _parse_inputs(inputs)
        rankings = await self.client.arerank_many(*work.args(), **self._options(work.most)) if work.queries else []
        outputs = work.finish(parsed, rankings)
        for out, ranking, cfg, count in work.reports(outputs, rankings, config):
            await _areport(ranking.stats, count, len(out), cfg)
        return outputs


# -- shared sync/async helpers ----------------------------------------------------------------
def _check_call(documents: Sequence[Document], query: str) -> list[Document]:
    if query is None:
        raise ValueError("query is missing: pass the search query as a str")
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if documents is None:
        raise ValueError("documents is missing: pass a list of langchain Document objects (an empty list is fine)")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, Document):
            raise TypeError(f"document {i} must be a langchain Document, got {type(d).__name__}")
    return docs


def _texts(docs: list[Document]) -> list[str]:
    return [d.page_content for d in docs]


def _apply(docs: list[Document], ranking: Ranking) -> list[Document]:
    # Copies with their own (deep-copied) metadata: nothing the caller holds is touched, and
    # nothing done later to the results reaches the caller's documents.
    out = []
    for r in ranking:
        doc = docs[r.index]
        metadata = copy.deepcopy(doc.metadata)
        metadata["relevance_score"] = r.score
        metadata["rerank_truncated"] = r.truncated
        out.append(doc.model_copy(update={"metadata": metadata}))
    return out


def _event_data(stats: RerankStats, documents: int, returned: int) -> dict[str, Any]:
    return {
        "pairs": stats.pairs,
        "tokens": stats.tokens,
        "truncated": stats.truncated,
        "seconds": stats.seconds,
        "engine": stats.engine,
        "documents": documents,
        "returned": returned,
    }


def _has_parent_run(config: RunnableConfig | None) -> bool:
    # Custom events belong to a run: inside a retriever or chain run (explicit callbacks or the
    # current run's context) there is one; a bare direct call has nobody to tell.
    return get_callback_manager_for_config(ensure_config(config)).parent_run_id is not None


def _report(stats: RerankStats, documents: int, returned: int, config: RunnableConfig | None) -> None:
    if _has_parent_run(config):
        dispatch_custom_event(STATS_EVENT, _event_data(stats, documents, returned), config=config)


async def _areport(stats: RerankStats, documents: int, returned: int, config: RunnableConfig | None) -> None:
    if _has_parent_run(config):
        await adispatch_custom_event(STATS_EVENT, _event_data(stats, documents, returned), config=ensure_config(config))


class _Work:
    """The valid inputs of a batch, flattened for one ``rerank_many`` call."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.documents: list[list[Document]] = []
        self.slots: list[int] = []  # input position of each query

    @property
    def most(self) -> int:
        return max(len(d) for d in self.documents)

    def args(self) -> tuple[list[str], list[list[str]]]:
        return self.queries, [_texts(d) for d in self.documents]

    def finish(
        self, parsed: list[list[Document] | Exception], rankings: list[Ranking]
    ) -> list[list[Document] | Exception]:
        outputs = list(parsed)
        for slot, docs, ranking in zip(self.slots, self.documents, rankings):
            outputs[slot] = _apply(docs, ranking)
        return outputs

    def reports(
        self, outputs: list[list[Document] | Exception], rankings: list[Ranking], configs: list[RunnableConfig]
    ) -> list[tuple[Any, Ranking, RunnableConfig, int]]:
        return [
            (outputs[slot], ranking, configs[slot], len(docs))
            for slot, docs, ranking in zip(self.slots, self.documents, rankings)
        ]


def _parse_inputs(inputs: list[RerankInput]) -> tuple[list[list[Document] | Exception], _Work]:
    """Validate each input; a bad one becomes that input's exception (``return_exceptions``)."""
    parsed: list[list[Document] | Exception] = []
    work = _Work()
    for i, item in enumerate(inputs):
        try:
            query, docs = _parse_input(item)
        except (TypeError, ValueError) as exc:
            parsed.append(exc)
            continue
        parsed.append([])
        if docs:
            work.queries.append(query)
            work.documents.append(docs)
            work.slots.append(i)
    return parsed, work


def _parse_input(item: Any) -> tuple[str, list[Document]]:
    if not isinstance(item, dict) or "documents" not in item:
        raise ValueError(
            f"Qwen3Reranker takes {{'query': str, 'documents': [Document, ...]}} as input, got {type(item).__name__}"
            + (f" with keys {sorted(item)}" if isinstance(item, dict) else "")
        )
    raw = item["documents"]
    if raw is None or isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise TypeError(f"input['documents'] must be a list of Document or str, got {type(raw).__name__}")
    docs = [Document(page_content=d) if isinstance(d, str) else d for d in raw]
    return item.get("query"), _check_call(docs, item.get("query"))
