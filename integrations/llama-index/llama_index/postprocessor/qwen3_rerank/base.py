"""Qwen3-Reranker as a LlamaIndex node postprocessor."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from qwen3_rerank import Reranker, settings
from qwen3_rerank.settings import DEFAULT_MODEL, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, USE_DEFAULT, RerankerSlot

from . import _helpers as h
from ._helpers import RETRIEVAL_SCORE_KEY, STATS_PAYLOAD_KEY

__all__ = ["Qwen3Rerank", "RETRIEVAL_SCORE_KEY", "STATS_PAYLOAD_KEY"]

dispatcher = get_dispatcher(__name__)


class Qwen3Rerank(BaseNodePostprocessor):
    """Rerank nodes with a Qwen3-Reranker model (any qwen3-rerank engine).

    Returns new ``NodeWithScore`` objects holding copies of the best ``top_n`` nodes, with
    ``score`` = P("yes") in [0, 1] and, in the copy's metadata (kept out of the LLM and embedding
    text), ``rerank_logit`` (its exact log-odds), ``rerank_truncated`` and, with
    ``long_documents="window"``, ``rerank_window`` / ``rerank_num_windows``. The nodes you pass are
    never modified. The model reads each node's content first, then its metadata. Copies and
    pickles build their own engine on first use.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.qwen3_rerank import Qwen3Rerank

            rerank = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
    """

    # hide_input_in_errors: a validation error must never print the API key it was given.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", hide_input_in_errors=True)

    top_n: int | None = Field(default=3, description="Nodes to return, best first (None: all; 0 is refused).")
    score_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Drop nodes whose relevance score (P('yes')) is below this value."
    )
    instruction: str | None = Field(
        default=None, description="Task instruction for the model (None: the reranker's, by default the model card's)."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata the model reads after the node's content."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description=f"Keep the retriever's score in metadata['{RETRIEVAL_SCORE_KEY}'] of the returned copies.",
    )
    engine: str = Field(
        default="transformers",
        description="Engine to build when no reranker is given: 'transformers', 'vllm' or 'remote'.",
    )
    model: str | None = Field(
        default=None,
        description=f"Hub id or local directory of the model (default: env {ENV_MODEL}, else {DEFAULT_MODEL}); "
        "for 'remote', the served model.",
    )
    base_url: str | list[str] | None = Field(
        default=None,
        description=f"URL of the server, or a list of them (engine='remote' only); default: env {ENV_BASE_URL}. "
        "Credentials in it are never shown or serialised.",
    )
    api_key: SecretStr | None = Field(
        default_factory=lambda: h.secret_from_env(ENV_API_KEY),
        exclude=True,
        description=f"Server API key (engine='remote'); default: env {ENV_API_KEY}.",
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="More options for qwen3_rerank.Reranker(...) and its engine (device, dtype, max_length, ...).",
    )

    _slot: RerankerSlot = PrivateAttr(default_factory=RerankerSlot)

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        """Create the postprocessor.

        Args:
            reranker: A ready :class:`qwen3_rerank.Reranker` (any engine). When given, leave the
                engine settings (``engine``, ``model``, ``base_url``, ``engine_options``) unset;
                it is not closed by :meth:`close`, and the postprocessor cannot be serialised.
            **data: The fields above.
        """
        settings.check_keywords(type(self).model_fields, data)
        if reranker is not None:  # the engine settings must be left unset
            settings.check_integration_settings(
                reranker=reranker, given=data, engine="transformers", model=None, base_url=None, engine_options={}
            )
        super().__init__(**data)
        self._slot = RerankerSlot(reranker)

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, top_n: Any) -> int | None:
        return settings.check_top_n(top_n)

    @field_serializer("base_url")
    def _redacted_base_url(self, base_url: str | list[str] | None) -> str | list[str] | None:
        return settings.redacted(base_url)

    @model_validator(mode="after")
    def _check_engine_settings(self) -> Qwen3Rerank:
        settings.check_integration_settings(
            reranker=None, given=self.model_fields_set, engine=self.engine, model=self.model,
            base_url=self.base_url, engine_options=self.engine_options,
        )  # fmt: skip
        return self

    def __repr_args__(self) -> Any:
        return [(k, settings.redacted(v) if k == "base_url" else v) for k, v in super().__repr_args__()]

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3Rerank"

    # -- the engine ---------------------------------------------------------------------------
    @property
    def reranker(self) -> Reranker:
        """The :class:`qwen3_rerank.Reranker` in use (built on first use from the settings)."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return self._slot.get(
            lambda: settings.build_integration_reranker(
                engine=self.engine, model=self.model, base_url=self.base_url, api_key=key,
                engine_options=self.engine_options,
            )
        )  # fmt: skip

    def close(self) -> None:
        """Release the engine this postprocessor built (an injected ``reranker`` is left open)."""
        self._slot.close()

    @property
    def _model_name(self) -> str:
        current = self._slot.current
        if self._slot.injected and current is not None:
            return str(current.engine.model_name or current.engine.name)
        return settings.resolve_model(self.model, engine=self.engine) or "remote"

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings as a dict (``from_dict`` rebuilds the postprocessor; the API key and any
        credentials in ``base_url`` are left out).

        Raises:
            TypeError: the postprocessor was built with ``reranker=`` (nothing could rebuild it).
        """
        if self._slot.injected:
            self._slot.__getstate__()  # raises: the same refusal as pickling
        return super().to_dict(**kwargs)

    def __getstate__(self) -> dict[str, Any]:
        self._slot.__getstate__()  # raises for an injected reranker; an empty slot pickles as {}
        return super().__getstate__()

    # -- BaseNodePostprocessor ----------------------------------------------------------------
    def postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, query_str: str | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Rerank ``nodes`` for the query; ``top_n`` (``None``: all) and ``instruction`` override
        the postprocessor's for this call."""
        return self._postprocess_nodes(nodes, h.bundle(query_bundle, query_str), top_n=top_n, instruction=instruction)

    async def apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, query_str: str | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Asynchronous :meth:`postprocess_nodes` through the engine's async path."""
        bundle = h.bundle(query_bundle, query_str)
        return await self._apostprocess_nodes(nodes, bundle, top_n=top_n, instruction=instruction)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        # DispatcherSpanMixin runs this (the base class's abstract method) inside a span.
        query, top_n, instruction = self._call(query_bundle, top_n, instruction)
        if not nodes:
            return []
        texts, payload = self._start(nodes, query_bundle, query, top_n)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = self.reranker.rerank(query, texts, **self._options(top_n, instruction))
            return self._finish(nodes, ranking, ranking.stats, event)

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, *,
        top_n: int | None = USE_DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        # Not abstract in the base class, so the mixin leaves it alone: the span is ours, and the
        # events below carry its id as they do on the sync path.
        query, top_n, instruction = self._call(query_bundle, top_n, instruction)
        if not nodes:
            return []
        texts, payload = self._start(nodes, query_bundle, query, top_n)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = await self.reranker.arerank(query, texts, **self._options(top_n, instruction))
            return self._finish(nodes, ranking, ranking.stats, event)

    # -- shared sync/async steps --------------------------------------------------------------
    def _call(
        self, query_bundle: QueryBundle | None, top_n: Any, instruction: str | None
    ) -> tuple[str, int | None, str | None]:
        top_n = self.top_n if top_n is USE_DEFAULT else settings.check_top_n(top_n)
        return h.query_of(query_bundle), top_n, instruction or self.instruction

    def _start(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, query: str, top_n: int | None
    ) -> tuple[list[str], dict[str, Any]]:
        top_k = top_n if top_n is not None else len(nodes)
        model_name = self._model_name
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_k, model_name=model_name))
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: top_k,
        }
        return [h.node_text(n.node, self.metadata_mode) for n in nodes], payload

    def _options(self, top_n: int | None, instruction: str | None) -> dict[str, Any]:
        return {"top_n": top_n, "instruction": instruction, "score_threshold": self.score_threshold}

    def _finish(self, nodes: list[NodeWithScore], results: list[Any], stats: Any, event: Any) -> list[NodeWithScore]:
        windows = self.reranker.long_documents == "window"
        keep = self.keep_retrieval_score
        new_nodes = [h.scored_copy(nodes[r.index], r, keep_retrieval_score=keep, windows=windows) for r in results]
        event.on_end(payload={EventPayload.NODES: new_nodes, STATS_PAYLOAD_KEY: h.stats_payload(stats, len(nodes))})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
