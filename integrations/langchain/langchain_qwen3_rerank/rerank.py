"""Qwen3-Reranker as a LangChain document compressor, a batched Runnable and a cross-encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from langchain_core.callbacks import Callbacks
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableSerializable
from langchain_core.utils import secret_from_env
from pydantic import AfterValidator, ConfigDict, Field, PlainSerializer, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from qwen3_rerank import Reranker, settings
from qwen3_rerank.settings import ENV_API_KEY, ENV_BASE_URL, USE_DEFAULT, RerankerSlot

from . import _helpers as h
from ._helpers import STATS_EVENT, RerankInput

__all__ = ["Qwen3Rerank", "RerankInput", "STATS_EVENT"]


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

    top_n: Annotated[int | None, AfterValidator(settings.check_top_n)] = 3
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

    base_url: Annotated[str | list[str] | None, PlainSerializer(settings.redacted)] = None
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
        # A base_url holding credentials is serialised as a reference to its variable, never in clear.
        base_url = {"base_url": ENV_BASE_URL} if settings.has_credentials(self.base_url) else {}
        return {"api_key": ENV_API_KEY, **base_url}

    @model_validator(mode="before")
    @classmethod
    def _hint_misplaced_keywords(cls, data: Any) -> Any:
        settings.check_keywords(cls.model_fields, data)
        return data

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
        return [(k, settings.redacted(v) if k == "base_url" else v) for k, v in super().__repr_args__()]

    # -- the engine ---------------------------------------------------------------------------
    @property
    def client(self) -> Reranker:
        """The :class:`qwen3_rerank.Reranker` in use (built on first use from the settings)."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        engine = {name: getattr(self, name) for name in settings.ENGINE_SETTINGS}  # engine, model, base_url, ...
        return self._slot.get(lambda: settings.build_integration_reranker(**engine, api_key=key))

    def close(self) -> None:
        """Release the engine this compressor built (an injected ``reranker`` is left open)."""
        self._slot.close()

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
        request = h.request(self, query, documents, top_n, instruction, allow_text=True)
        return [{"index": r.index, "relevance_score": r.score} for r in h.score(self, [request])[0].results()]

    async def arerank(
        self, documents: Sequence[str | Document | dict[str, Any]], query: str, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Asynchronous :meth:`rerank` through the engine's async path."""
        request = h.request(self, query, documents, top_n, instruction, allow_text=True)
        return [{"index": r.index, "relevance_score": r.score} for r in (await h.ascore(self, [request]))[0].results()]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """The best ``top_n`` copies of ``documents`` for ``query`` (``None``: all), with their scores;
        ``[]`` for no documents, without calling the engine."""
        request = h.request(self, query, documents, top_n, instruction, allow_text=False)
        return h.finish(self, h.score(self, [request])[0], {"callbacks": callbacks})

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> Sequence[Document]:  # fmt: skip
        """Asynchronous :meth:`compress_documents` through the engine's async path."""
        request = h.request(self, query, documents, top_n, instruction, allow_text=False)
        return await h.afinish(self, (await h.ascore(self, [request]))[0], {"callbacks": callbacks})

    # -- Runnable: {"query", "documents", "top_n"?, "instruction"?} -> list[Document] -----------
    def invoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Rerank ``input["documents"]`` for ``input["query"]``."""
        return self._runnable().invoke(input, config)

    async def ainvoke(self, input: RerankInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """Asynchronous :meth:`invoke`."""
        return await self._runnable().ainvoke(input, config)

    def batch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Rerank many inputs with ONE engine call (``rerank_many``) per distinct instruction; each
        input keeps its own run (callbacks, tracing, stats event), as ``Runnable.batch`` makes them."""
        requests = {id(item): h.parse_input(self, item) for item in inputs}
        h.score(self, list(requests.values()))
        return self._runnable(requests).batch(list(inputs), config, return_exceptions=return_exceptions)

    async def abatch(
        self, inputs: list[RerankInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> list[Any]:  # fmt: skip
        """Asynchronous :meth:`batch`: one ``arerank_many`` call per distinct instruction."""
        requests = {id(item): h.parse_input(self, item) for item in inputs}
        await h.ascore(self, list(requests.values()))
        return await self._runnable(requests).abatch(list(inputs), config, return_exceptions=return_exceptions)

    def _runnable(self, scored: dict[int, h.Request] | None = None) -> RunnableLambda[Any, list[Document]]:
        # A run of its own per input (callbacks, tracing), opened by langchain_core as for any lambda.
        # In a batch each input takes its share of the calls made beforehand; alone, it is scored in its run.
        def answer(item: Any, config: RunnableConfig) -> list[Document]:
            request = scored[id(item)] if scored is not None else h.score(self, [h.parse_input(self, item)])[0]
            return h.finish(self, request, config)

        async def aanswer(item: Any, config: RunnableConfig) -> list[Document]:
            request = scored[id(item)] if scored is not None else (await h.ascore(self, [h.parse_input(self, item)]))[0]
            return await h.afinish(self, request, config)

        return RunnableLambda(answer, afunc=aanswer, name=self.get_name())


def __getattr__(name: str) -> Any:
    # `from langchain_qwen3_rerank.rerank import Qwen3Reranker` keeps working, with the package's warning.
    if name == "Qwen3Reranker":
        from . import __getattr__ as package_getattr

        return package_getattr(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
