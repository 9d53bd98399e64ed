"""Qwen3-Reranker as a LangChain document compressor and a batched Runnable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.utils import secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from typing_extensions import Self

from qwen3_rerank import Ranking, Reranker
from qwen3_rerank import settings as qwen3_settings  # `settings` names the engine fields below
from qwen3_rerank.settings import ENV_API_KEY

from . import _helpers as h
from ._helpers import DEFAULT, STATS_EVENT, RerankInput

__all__ = ["Qwen3Rerank", "RerankInput", "STATS_EVENT"]

logger = logging.getLogger(__name__)


class Qwen3Rerank(BaseDocumentCompressor, RunnableSerializable[RerankInput, list[Document]]):
    """Rerank documents with a Qwen3-Reranker model (any qwen3-rerank engine).

    A :class:`~langchain_core.documents.BaseDocumentCompressor` (use it in a
    ``ContextualCompressionRetriever``) and a Runnable taking ``{"query", "documents"}`` plus
    optional ``"top_n"`` / ``"instruction"`` (use it in LCEL; ``.batch()`` / ``.abatch()`` of many
    queries score every pair in one engine call). :meth:`rerank` returns Cohere-style
    ``[{"index", "relevance_score"}]``.

    Returned documents are copies carrying ``metadata["relevance_score"]`` (P("yes") in [0, 1]),
    ``"rerank_logit"`` (its exact log-odds), ``"rerank_truncated"`` and, with
    ``long_documents="window"``, ``"rerank_window"`` / ``"rerank_num_windows"``; the caller's
    documents are never modified.

    Example:
        .. code-block:: python

            from langchain_qwen3_rerank import Qwen3Rerank

            reranker = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            best = reranker.compress_documents(docs, "what is BM25?")
            chain = {"query": RunnablePassthrough(), "documents": retriever} | reranker
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    top_n: int | None = 3
    """How many documents to return, best first (``None``: all; 0 is refused)."""

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
    ``Qwen/Qwen3-Reranker-0.6B``). For the remote engine: the served model."""

    base_url: str | list[str] | None = None
    """URL of the vLLM server (remote engine only), e.g. ``http://127.0.0.1:8000``; a list
    spreads the load over several servers. Default: ``$QWEN3_RERANK_BASE_URL``."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env(ENV_API_KEY, default=None))
    """API key of the server (remote engine only); read from ``$QWEN3_RERANK_API_KEY`` if not given."""

    engine_options: dict[str, Any] = Field(default_factory=dict)
    """Further keyword options for ``qwen3_rerank.Reranker(...)`` and its engine, e.g.
    ``{"device": "cuda", "dtype": "bfloat16", "max_length": 4096, "long_documents": "window"}``."""

    _built: Reranker | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": ENV_API_KEY}

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, top_n: Any) -> int | None:
        return h.check_top_n(top_n)

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
                key = self.api_key if self.engine == "remote" else None
                api_key = key.get_secret_value() if key is not None else None
                logger.info("building a %s reranker", self.engine)
                self._built = qwen3_settings.build_reranker(
                    self.engine, model=self.model, base_url=self.base_url, api_key=api_key, **self.engine_options
                )
            return self._built

    def close(self) -> None:
        """Release the engine this compressor built (an injected ``reranker`` is left open)."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None:
            built.close()

    def _options(self, count: int, instruction: str | None) -> dict[str, Any]:
        # Ask the core for every document (its top_n=None would mean "the Reranker's default");
        # each caller keeps its own top_n of the ranking.
        return {"top_n": max(count, 1), "instruction": instruction, "score_threshold": self.score_threshold}

    def _call(self, top_n: Any, instruction: str | None) -> tuple[int | None, str | None]:
        return (self.top_n if top_n is DEFAULT else h.check_top_n(top_n)), (instruction or self.instruction)

    # -- Cohere-style ranking -----------------------------------------------------------------
    def rerank(
        self, documents: Sequence[str | Document | dict[str, Any]], query: str, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Rank ``documents`` for ``query``, as ``CohereRerank.rerank`` does.

        Args:
            documents: The candidates: str, ``Document`` or dict with a ``"text"`` str.
            query: The search query.
            top_n: How many to return (``None``: all); default: the compressor's ``top_n``.
            instruction: Task instruction for this call; default: the compressor's.

        Returns:
            ``[{"index": i, "relevance_score": p}, ...]`` best first, ``i`` the position in
            ``documents`` and ``p`` = P("yes"); ``score_threshold`` applies. ``[]`` for no documents.
        """
        ranking = self._rank(h.as_documents(documents, allow_text=True), h.check_query(query), top_n, instruction)
        return [{"index": r.index, "relevance_score": r.score} for r in ranking]

    async def arerank(
        self, documents: Sequence[str | Document | dict[str, Any]], query: str, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Asynchronous :meth:`rerank` through the engine's async path."""
        docs = h.as_documents(documents, allow_text=True)
        ranking = await self._arank(docs, h.check_query(query), top_n, instruction)
        return [{"index": r.index, "relevance_score": r.score} for r in ranking]

    def _rank(self, docs: list[Document], query: str, top_n: Any, instruction: str | None) -> Ranking:
        top_n, instruction = self._call(top_n, instruction)
        if not docs:
            return Ranking()
        return h.first(self.client.rerank(query, h.texts(docs), **self._options(len(docs), instruction)), top_n)

    async def _arank(self, docs: list[Document], query: str, top_n: Any, instruction: str | None) -> Ranking:
        top_n, instruction = self._call(top_n, instruction)
        if not docs:
            return Ranking()
        return h.first(await self.client.arerank(query, h.texts(docs), **self._options(len(docs), instruction)), top_n)

    # -- BaseDocumentCompressor ---------------------------------------------------------------
    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """Rerank ``documents`` for ``query``; return the best copies with their scores.

        Args:
            documents: The retrieved documents (not modified).
            query: The search query.
            callbacks: Callbacks of the calling run; they receive the :data:`STATS_EVENT`.
            top_n: Documents to return for this call (``None``: all); default: the compressor's.
            instruction: Task instruction for this call; default: the compressor's.

        Returns:
            Up to ``top_n`` copies, best first, with the ``metadata`` keys listed on the class.
            An empty ``documents`` gives ``[]`` without calling the engine.
        """
        docs = h.as_documents(documents, allow_text=False)
        ranking = self._rank(docs, h.check_query(query), top_n, instruction)
        return self._finish(docs, ranking, {"callbacks": callbacks})

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """Asynchronous :meth:`compress_documents` through the engine's async path."""
        docs = h.as_documents(documents, allow_text=False)
        ranking = await self._arank(docs, h.check_query(query), top_n, instruction)
        return await self._afinish(docs, ranking, {"callbacks": callbacks})

    def _finish(self, docs: list[Document], ranking: Ranking, config: RunnableConfig) -> list[Document]:
        if not docs:  # nothing was scored: no engine built, no event
            return []
        out = h.scored_copies(docs, ranking, windows=self._windows())
        h.report(ranking.stats, len(docs), len(out), config)
        return out

    async def _afinish(self, docs: list[Document], ranking: Ranking, config: RunnableConfig) -> list[Document]:
        if not docs:
            return []
        out = h.scored_copies(docs, ranking, windows=self._windows())
        await h.areport(ranking.stats, len(docs), len(out), config)
        return out

    def _windows(self) -> bool:
        return self.client.long_documents == "window"

    # -- Runnable: {"query", "documents", "top_n"?, "instruction"?} -> list[Document] -----------
    def invoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Rerank ``input["documents"]`` for ``input["query"]``."""
        ranked: list[Document] = self.batch([input], config, **kwargs)[0]
        return ranked

    async def ainvoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Asynchronous :meth:`invoke`."""
        ranked: list[Document] = (await self.abatch([input], config, **kwargs))[0]
        return ranked

    def batch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Rerank many inputs with ONE engine call (``rerank_many``) per distinct instruction.

        Each input still gets its own run (callbacks, tracing) and its own stats event.
        """
        return h.run_batch(self, list(inputs), config, return_exceptions, self._batch)

    async def abatch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Asynchronous :meth:`batch`: one ``arerank_many`` call per distinct instruction."""
        return await h.arun_batch(self, list(inputs), config, return_exceptions, self._abatch)

    def _batch(self, inputs: list[Any], configs: list[RunnableConfig]) -> list[Any]:
        batch = h.Batch.parse(inputs, top_n=self.top_n, instruction=self.instruction)
        for instruction, requests in batch.calls.items():
            rankings = self.client.rerank_many(*h.call_args(requests), **self._options(h.most(requests), instruction))
            for r, ranking in zip(requests, rankings, strict=True):
                batch.outputs[r.slot] = self._finish(r.docs, h.first(ranking, r.top_n), configs[r.slot])
        return batch.outputs

    async def _abatch(self, inputs: list[Any], configs: list[RunnableConfig]) -> list[Any]:
        batch = h.Batch.parse(inputs, top_n=self.top_n, instruction=self.instruction)
        for instruction, requests in batch.calls.items():
            options = self._options(h.most(requests), instruction)
            rankings = await self.client.arerank_many(*h.call_args(requests), **options)
            for r, ranking in zip(requests, rankings, strict=True):
                batch.outputs[r.slot] = await self._afinish(r.docs, h.first(ranking, r.top_n), configs[r.slot])
        return batch.outputs


def __getattr__(name: str) -> Any:
    # `from langchain_qwen3_rerank.rerank import Qwen3Reranker` keeps working, with the package's warning.
    if name == "Qwen3Reranker":
        from . import __getattr__ as package_getattr

        return package_getattr(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
