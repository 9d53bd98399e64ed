"""Qwen3-Reranker as a LangChain document compressor, a batched Runnable and a cross-encoder."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableSerializable
from langchain_core.utils import secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_serializer, field_validator, model_validator
from typing_extensions import Self

from qwen3_rerank import Ranking, Reranker, settings
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, USE_DEFAULT, RerankerSlot

from . import _helpers as h
from ._helpers import STATS_EVENT, RerankInput

__all__ = ["Qwen3Rerank", "RerankInput", "STATS_EVENT"]

# The rankings of the batch() / abatch() in progress, by input: each input's invoke() takes its own.
_BATCH: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar("qwen3_rerank_batch", default=None)


class Qwen3Rerank(BaseDocumentCompressor, RunnableSerializable[RerankInput, list[Document]], BaseCrossEncoder):
    """Rerank documents with a Qwen3-Reranker model (any qwen3-rerank engine).

    A :class:`~langchain_core.documents.BaseDocumentCompressor` (use it in a
    ``ContextualCompressionRetriever``) and a Runnable taking ``{"query", "documents"}`` plus
    optional ``"top_n"`` / ``"instruction"`` (use it in LCEL; ``.batch()`` / ``.abatch()`` of many
    queries score every pair in one engine call). :meth:`rerank` returns Cohere-style
    ``[{"index", "relevance_score"}]``. It is also a ``BaseCrossEncoder``: ``CrossEncoderReranker(
    model=Qwen3Rerank(...))`` users swap only the model (:meth:`score`, one engine call for all pairs).

    Returned documents are copies carrying ``metadata["relevance_score"]`` (P("yes") in [0, 1]),
    ``"rerank_logit"`` (its exact log-odds), ``"rerank_truncated"`` and, with
    ``long_documents="window"``, ``"rerank_window"`` / ``"rerank_num_windows"``; the caller's
    documents are never modified. Copies and pickles build their own engine on first use.

    Example:
        .. code-block:: python

            from langchain_qwen3_rerank import Qwen3Rerank

            reranker = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            best = reranker.compress_documents(docs, "what is BM25?")
            chain = {"query": RunnablePassthrough(), "documents": retriever} | reranker
    """

    # hide_input_in_errors: a validation error must never print the API key it was given.
    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, protected_namespaces=(), hide_input_in_errors=True
    )

    top_n: int | None = 3
    """How many documents to return, best first (``None``: all; 0 is refused)."""

    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop documents whose relevance score (P("yes")) is below this value."""

    instruction: str | None = None
    """Task instruction for the model (``None``: the reranker's, by default the model card's)."""

    reranker: Reranker | None = Field(default=None, exclude=True)
    """A ready :class:`qwen3_rerank.Reranker` to use. When set, the engine settings below must be
    left unset; the reranker is not closed by :meth:`close`."""

    engine: str = "transformers"
    """Engine to build when no ``reranker`` is given: ``"transformers"`` (embedded), ``"vllm"``
    (in-process vLLM) or ``"remote"`` (a qwen3-rerank or vLLM server at ``base_url``)."""

    model: str | None = None
    """Hub id or local directory of the model (default ``$QWEN3_RERANK_MODEL``, else
    ``Qwen/Qwen3-Reranker-0.6B``). For the remote engine: the served model."""

    base_url: str | list[str] | None = None
    """URL of the server (remote engine only), e.g. ``http://127.0.0.1:8000``; a list spreads the
    load over several. Default: ``$QWEN3_RERANK_BASE_URL``. Credentials in it are never shown or
    serialised."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env(ENV_API_KEY, default=None))
    """API key of the server (remote engine only); read from ``$QWEN3_RERANK_API_KEY`` if not given."""

    engine_options: dict[str, Any] = Field(default_factory=dict)
    """Further keyword options for ``qwen3_rerank.Reranker(...)`` and its engine, e.g.
    ``{"device": "cuda", "dtype": "bfloat16", "max_length": 4096, "long_documents": "window"}``."""

    _slot: RerankerSlot = PrivateAttr(default_factory=RerankerSlot)

    @property
    def lc_secrets(self) -> dict[str, str]:
        secrets = {"api_key": ENV_API_KEY}
        if h.has_credentials(self.base_url):  # serialised as a reference to the variable, never in clear
            secrets["base_url"] = ENV_BASE_URL
        return secrets

    @model_validator(mode="before")
    @classmethod
    def _hint_misplaced_keywords(cls, data: Any) -> Any:
        return h.hint_misplaced_keywords(cls, data)

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, top_n: Any) -> int | None:
        return settings.check_top_n(top_n)

    @field_serializer("base_url")
    def _redacted_base_url(self, base_url: str | list[str] | None) -> str | list[str] | None:
        return h.redacted(base_url)

    @model_validator(mode="after")
    def _check_engine_settings(self) -> Self:
        settings.check_integration_settings(
            reranker=self.reranker, given=self.model_fields_set, engine=self.engine, model=self.model,
            base_url=self.base_url, engine_options=self.engine_options,
        )  # fmt: skip
        self._slot = RerankerSlot(self.reranker)
        return self

    def __getstate__(self) -> dict[Any, Any]:
        self._slot.__getstate__()  # refuses an injected reranker; an empty slot pickles as {}
        return super().__getstate__()

    def __repr_args__(self) -> Any:
        return [(k, h.redacted(v) if k == "base_url" else v) for k, v in super().__repr_args__()]

    # -- the engine ---------------------------------------------------------------------------
    @property
    def client(self) -> Reranker:
        """The :class:`qwen3_rerank.Reranker` in use (built on first use from the settings)."""
        return self._slot.get(lambda: h.build(self))

    def close(self) -> None:
        """Release the engine this compressor built (an injected ``reranker`` is left open)."""
        self._slot.close()

    def _rank(self, docs: list[Document], query: str, top_n: Any, instruction: str | None) -> Ranking:
        if not docs:
            return Ranking()
        return self.client.rerank(query, h.texts(docs), **self._options(top_n, instruction))

    async def _arank(self, docs: list[Document], query: str, top_n: Any, instruction: str | None) -> Ranking:
        if not docs:
            return Ranking()
        return await self.client.arerank(query, h.texts(docs), **self._options(top_n, instruction))

    def _options(self, top_n: Any, instruction: str | None) -> dict[str, Any]:
        chosen = self.top_n if top_n is USE_DEFAULT else settings.check_top_n(top_n)
        instruction = instruction or self.instruction
        return {"top_n": chosen, "instruction": instruction, "score_threshold": self.score_threshold}

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """P("yes") of each ``(query, document)`` pair, in input order, in one engine call
        (``BaseCrossEncoder``; ``Reranker.score_pairs``)."""
        return self.client.score_pairs(list(text_pairs), instruction=self.instruction)

    # -- Cohere-style ranking and the compressor ----------------------------------------------
    def rerank(
        self, documents: Sequence[str | Document | dict[str, Any]], query: str, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Rank ``documents`` (str, ``Document`` or ``{"text": ...}``) for ``query``, as
        ``CohereRerank.rerank`` does: ``[{"index", "relevance_score"}]`` best first."""
        ranking = self._rank(h.as_documents(documents, allow_text=True), h.check_query(query), top_n, instruction)
        return [{"index": r.index, "relevance_score": r.score} for r in ranking]

    async def arerank(
        self, documents: Sequence[str | Document | dict[str, Any]], query: str, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Asynchronous :meth:`rerank` through the engine's async path."""
        docs = h.as_documents(documents, allow_text=True)
        ranking = await self._arank(docs, h.check_query(query), top_n, instruction)
        return [{"index": r.index, "relevance_score": r.score} for r in ranking]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """The best ``top_n`` copies of ``documents`` for ``query`` (``None``: all), with their scores;
        ``[]`` for no documents, without calling the engine."""
        docs = h.as_documents(documents, allow_text=False)
        ranking = self._rank(docs, h.check_query(query), top_n, instruction)
        return h.finish(self, docs, ranking, {"callbacks": callbacks})

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """Asynchronous :meth:`compress_documents` through the engine's async path."""
        docs = h.as_documents(documents, allow_text=False)
        ranking = await self._arank(docs, h.check_query(query), top_n, instruction)
        return await h.afinish(self, docs, ranking, {"callbacks": callbacks})

    # -- Runnable: {"query", "documents", "top_n"?, "instruction"?} -> list[Document] -----------
    def invoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Rerank ``input["documents"]`` for ``input["query"]`` (inside ``batch``: its share of the one call)."""
        return self._runnable().invoke(input, config)

    async def ainvoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Asynchronous :meth:`invoke`."""
        return await self._runnable().ainvoke(input, config)

    def _runnable(self) -> RunnableLambda[Any, list[Document]]:
        # A run of its own per input (callbacks, tracing), opened by langchain_core as for any lambda.
        return RunnableLambda(self._answer, afunc=self._aanswer, name=self.get_name())

    def batch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Rerank many inputs with ONE engine call (``rerank_many``) per distinct instruction; each
        input keeps its own run (callbacks, tracing, stats event), as ``Runnable.batch`` makes them."""
        token = _BATCH.set(h.score_batch(self, list(inputs)))
        try:
            return super().batch(list(inputs), config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _BATCH.reset(token)

    async def abatch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Asynchronous :meth:`batch`: one ``arerank_many`` call per distinct instruction."""
        token = _BATCH.set(await h.ascore_batch(self, list(inputs)))
        try:
            return await super().abatch(list(inputs), config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _BATCH.reset(token)

    def _answer(self, input: Any, config: RunnableConfig) -> list[Document]:
        found = h.take(_BATCH.get(), self, input) or h.take(h.score_batch(self, [input]), self, input)
        request, ranking = found  # type: ignore[misc]  # take() returns an entry for an input it planned
        return h.finish(self, request.docs, h.first(ranking, request.top_n), config)

    async def _aanswer(self, input: Any, config: RunnableConfig) -> list[Document]:
        found = h.take(_BATCH.get(), self, input) or h.take(await h.ascore_batch(self, [input]), self, input)
        request, ranking = found  # type: ignore[misc]
        return await h.afinish(self, request.docs, h.first(ranking, request.top_n), config)


def __getattr__(name: str) -> Any:
    # `from langchain_qwen3_rerank.rerank import Qwen3Reranker` keeps working, with the package's warning.
    if name == "Qwen3Reranker":
        from . import __getattr__ as package_getattr

        return package_getattr(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
