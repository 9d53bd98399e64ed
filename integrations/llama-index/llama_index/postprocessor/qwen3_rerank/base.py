"""Qwen3-Reranker as a LlamaIndex node postprocessor."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, Literal

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from qwen3_rerank import Ranking, Reranker, RerankStats
from qwen3_rerank import settings as qwen3_settings  # `settings` names the engine fields below
from qwen3_rerank.settings import DEFAULT_MODEL, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

__all__ = ["Qwen3Rerank", "RETRIEVAL_SCORE_KEY", "STATS_PAYLOAD_KEY"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"
"""Metadata key of the retriever's score on returned nodes when ``keep_retrieval_score=True``."""

STATS_PAYLOAD_KEY = "rerank_stats"
"""Key of the stats dict (``pairs``, ``tokens``, ``truncated``, ``seconds``, ``engine``) in the
end payload of the ``CBEventType.RERANKING`` callback event."""


class Qwen3Rerank(BaseNodePostprocessor):
    """Rerank nodes with a Qwen3-Reranker model (any qwen3-rerank engine).

    Returns new ``NodeWithScore`` objects holding copies of the best ``top_n`` nodes, with
    ``score`` = P("yes") in [0, 1]; the nodes you pass are never modified.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.qwen3_rerank import Qwen3Rerank

            rerank = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    top_n: int | None = Field(default=3, gt=0, description="Nodes to return, best first (None: all).")
    score_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Drop nodes whose relevance score (P('yes')) is below this value."
    )
    instruction: str | None = Field(
        default=None, description="Task instruction for the model (None: the reranker's, by default the model card's)."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata goes into the text the model reads (as for embeddings)."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description=(
            f"Keep the retriever's score in metadata['{RETRIEVAL_SCORE_KEY}'] of the returned copies, "
            "excluded from the text sent to the LLM and the embedding model."
        ),
    )
    engine: Literal["transformers", "vllm", "remote"] = Field(
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
        description=f"URL of the vLLM server, or a list of them (engine='remote' only); default: env {ENV_BASE_URL}.",
    )
    api_key: SecretStr | None = Field(
        default=None, exclude=True, description=f"Server API key (engine='remote'); default: env {ENV_API_KEY}."
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword options for qwen3_rerank.Reranker(...) and its engine (device, dtype, max_length, ...).",
    )

    _reranker: Reranker | None = PrivateAttr(default=None)
    _owns_reranker: bool = PrivateAttr(default=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        """Create the postprocessor.

        Args:
            reranker: A ready :class:`qwen3_rerank.Reranker` (any engine). When given, leave the
                engine settings (``engine``, ``model``, ``base_url``, ``engine_options``) unset;
                it is not closed by :meth:`close`.
            **data: The fields above.
        """
        if reranker is not None:
            settings = sorted({"engine", "model", "base_url", "engine_options"} & data.keys())
            if settings:
                raise ValueError(
                    f"pass either reranker= or engine settings, not both (got reranker and {settings}); "
                    "configure the engine when you build the Reranker"
                )
            if not isinstance(reranker, Reranker):
                raise TypeError(f"reranker must be a qwen3_rerank.Reranker, got {type(reranker).__name__}")
        if data.get("api_key") is None and qwen3_settings.resolve_api_key(None):
            data["api_key"] = qwen3_settings.resolve_api_key(None)
        super().__init__(**data)
        self._reranker = reranker

    @model_validator(mode="after")
    def _check_engine_settings(self) -> Qwen3Rerank:
        if self.base_url is not None and self.engine != "remote":
            raise ValueError(
                f"base_url is only used by engine='remote', got engine={self.engine!r}; set engine='remote'"
            )
        # Unknown engine options, a missing or scheme-less base URL: refused now, not at the first call.
        qwen3_settings.reranker_kwargs(self.engine, model=self.model, base_url=self.base_url, **self.engine_options)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3Rerank"

    # -- the engine ---------------------------------------------------------------------------
    @property
    def reranker(self) -> Reranker:
        """The :class:`qwen3_rerank.Reranker` in use (built on first use from the settings)."""
        with self._lock:
            if self._reranker is None:
                self._reranker = self._build()
                self._owns_reranker = True
            return self._reranker

    def _build(self) -> Reranker:
        api_key = self.api_key.get_secret_value() if self.api_key is not None and self.engine == "remote" else None
        model = qwen3_settings.resolve_model(self.model, engine=self.engine)
        logger.info("building a %s reranker for %s", self.engine, model or "the served model")
        return qwen3_settings.build_reranker(
            self.engine, model=self.model, base_url=self.base_url, api_key=api_key, **self.engine_options
        )

    def close(self) -> None:
        """Release the engine this postprocessor built (an injected ``reranker`` is left open)."""
        with self._lock:
            owned = self._reranker if self._owns_reranker else None
            if owned is not None:
                self._reranker, self._owns_reranker = None, False
        if owned is not None:
            owned.close()

    @property
    def _model_name(self) -> str:
        if self._reranker is not None and not self._owns_reranker:
            engine = self._reranker.engine
            return str(getattr(engine, "model_name", None) or getattr(engine, "model", None) or engine.name)
        return qwen3_settings.resolve_model(self.model, engine=self.engine) or "remote"

    # -- BaseNodePostprocessor ----------------------------------------------------------------
    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        if not nodes:
            return []
        top_n, texts, payload = self._start(nodes, query_bundle, query)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = self.reranker.rerank(query, texts, **self._options(top_n))
            new_nodes = self._finish(nodes, ranking, event)
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        if not nodes:
            return []
        top_n, texts, payload = self._start(nodes, query_bundle, query)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = await self.reranker.arerank(query, texts, **self._options(top_n))
            new_nodes = self._finish(nodes, ranking, event)
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    # -- shared sync/async helpers ------------------------------------------------------------
    def _start(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, query: str
    ) -> tuple[int, list[str], dict[str, Any]]:
        # top_n=None means "all" here, while the core reads None as "the Reranker's default".
        top_n = self.top_n if self.top_n is not None else len(nodes)
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        model_name = self._model_name
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model_name))
        payload = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: top_n,
        }
        return top_n, texts, payload

    def _options(self, top_n: int) -> dict[str, Any]:
        return {"top_n": top_n, "instruction": self.instruction, "score_threshold": self.score_threshold}

    def _finish(self, nodes: list[NodeWithScore], ranking: Ranking, event: Any) -> list[NodeWithScore]:
        new_nodes = [NodeWithScore(node=self._copy_node(nodes[r.index]), score=r.score) for r in ranking]
        event.on_end(payload={EventPayload.NODES: new_nodes, STATS_PAYLOAD_KEY: _stats(ranking.stats, len(nodes))})
        return new_nodes

    def _copy_node(self, scored: NodeWithScore) -> Any:
        # A copy with its own metadata and exclusion lists: nothing the caller holds changes, and
        # nothing done later to the results reaches the caller's nodes.
        node = scored.node
        metadata = copy.deepcopy(node.metadata)
        llm_excluded = list(node.excluded_llm_metadata_keys)
        embed_excluded = list(node.excluded_embed_metadata_keys)
        if self.keep_retrieval_score:
            metadata[RETRIEVAL_SCORE_KEY] = scored.score
            # The score is bookkeeping: keep it out of the text the LLM and embeddings see.
            for excluded in (llm_excluded, embed_excluded):
                if RETRIEVAL_SCORE_KEY not in excluded:
                    excluded.append(RETRIEVAL_SCORE_KEY)
        return node.model_copy(
            update={
                "metadata": metadata,
                "excluded_llm_metadata_keys": llm_excluded,
                "excluded_embed_metadata_keys": embed_excluded,
                "relationships": dict(node.relationships),
            }
        )


def _query(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None or query_bundle.query_str is None:
        raise ValueError(
            "Qwen3Rerank needs the query: call postprocess_nodes(nodes, query_str='...') or pass "
            "query_bundle=QueryBundle('...') (query engines pass it for you)"
        )
    if not isinstance(query_bundle.query_str, str):
        raise TypeError(f"query_str must be a str, got {type(query_bundle.query_str).__name__}")
    return query_bundle.query_str


def _stats(stats: RerankStats, documents: int) -> dict[str, Any]:
    return {
        "pairs": stats.pairs,
        "tokens": stats.tokens,
        "truncated": stats.truncated,
        "seconds": stats.seconds,
        "engine": stats.engine,
        "documents": documents,
    }
