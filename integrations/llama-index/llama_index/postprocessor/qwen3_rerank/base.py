"""Qwen3-Reranker as a LlamaIndex node postprocessor."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from llama_index.core.base.llms.generic_utils import get_from_param_or_env
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from qwen3_rerank import Reranker
from qwen3_rerank import settings as qwen3_settings  # `settings` names the engine fields below
from qwen3_rerank.settings import DEFAULT_MODEL, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

from . import _helpers as h
from ._helpers import DEFAULT, RETRIEVAL_SCORE_KEY, STATS_PAYLOAD_KEY

__all__ = ["Qwen3Rerank", "RETRIEVAL_SCORE_KEY", "STATS_PAYLOAD_KEY"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)


class Qwen3Rerank(BaseNodePostprocessor):
    """Rerank nodes with a Qwen3-Reranker model (any qwen3-rerank engine).

    Returns new ``NodeWithScore`` objects holding copies of the best ``top_n`` nodes, with
    ``score`` = P("yes") in [0, 1] and, in the copy's metadata (kept out of the LLM and embedding
    text), ``rerank_logit`` (its exact log-odds), ``rerank_truncated`` and, with
    ``long_documents="window"``, ``rerank_window`` / ``rerank_num_windows``. The nodes you pass are
    never modified. The model reads each node's content first, then its metadata.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.qwen3_rerank import Qwen3Rerank

            rerank = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

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
        description="More options for qwen3_rerank.Reranker(...) and its engine (device, dtype, max_length, ...).",
    )

    _reranker: Reranker | None = PrivateAttr(default=None)
    _injected: bool = PrivateAttr(default=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        """Create the postprocessor.

        Args:
            reranker: A ready :class:`qwen3_rerank.Reranker` (any engine). When given, leave the
                engine settings (``engine``, ``model``, ``base_url``, ``engine_options``) unset;
                it is not closed by :meth:`close`, and the postprocessor cannot be serialised.
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
        data["api_key"] = get_from_param_or_env("api_key", data.get("api_key"), ENV_API_KEY, "") or None
        super().__init__(**data)
        self._reranker, self._injected = reranker, reranker is not None

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, top_n: Any) -> int | None:
        return h.check_top_n(top_n)

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
                key = self.api_key if self.engine == "remote" else None
                api_key = key.get_secret_value() if key is not None else None
                logger.info("building a %s reranker", self.engine)
                self._reranker = qwen3_settings.build_reranker(
                    self.engine, model=self.model, base_url=self.base_url, api_key=api_key, **self.engine_options
                )
            return self._reranker

    def close(self) -> None:
        """Release the engine this postprocessor built (an injected ``reranker`` is left open)."""
        with self._lock:
            owned = None if self._injected else self._reranker
            if owned is not None:
                self._reranker = None
        if owned is not None:
            owned.close()

    @property
    def _model_name(self) -> str:
        if self._injected and self._reranker is not None:
            engine = self._reranker.engine
            return str(getattr(engine, "model_name", None) or engine.name)
        return qwen3_settings.resolve_model(self.model, engine=self.engine) or "remote"

    # -- serialisation ------------------------------------------------------------------------
    def _refuse_if_injected(self, how: str) -> None:
        # from_dict/unpickling rebuild from the fields; an injected Reranker is not among them, so
        # the copy would silently score with the default embedded model instead.
        if self._injected:
            raise TypeError(
                f"cannot {how} a Qwen3Rerank built with reranker=...: the Reranker object is not data, and "
                "the copy would silently build the default engine instead. Build it from settings "
                "(engine=, model=, base_url=, engine_options=) to serialise it, or pass reranker= again"
            )

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings as a dict (``from_dict`` rebuilds the postprocessor; the API key is left out).

        Raises:
            TypeError: the postprocessor was built with ``reranker=`` (nothing could rebuild it).
        """
        self._refuse_if_injected("serialise")
        return super().to_dict(**kwargs)

    def __getstate__(self) -> dict[str, Any]:
        self._refuse_if_injected("pickle")
        return super().__getstate__()

    # -- BaseNodePostprocessor ----------------------------------------------------------------
    def postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, query_str: str | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Rerank ``nodes`` for the query; ``top_n`` (``None``: all) and ``instruction`` override
        the postprocessor's for this call."""
        return self._postprocess_nodes(nodes, h.bundle(query_bundle, query_str), top_n=top_n, instruction=instruction)

    async def apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, query_str: str | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Asynchronous :meth:`postprocess_nodes` through the engine's async path."""
        bundle = h.bundle(query_bundle, query_str)
        return await self._apostprocess_nodes(nodes, bundle, top_n=top_n, instruction=instruction)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        # DispatcherSpanMixin runs this (the base class's abstract method) inside a span.
        query, top_n, instruction = self._call(query_bundle, top_n, instruction)
        if not nodes:
            return []
        texts, payload = self._start(nodes, query_bundle, query, top_n)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = self.reranker.rerank(query, texts, **self._options(len(nodes), instruction))
            return self._finish(nodes, ranking[:top_n], ranking.stats, event)

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, *,
        top_n: int | None = DEFAULT, instruction: str | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        # Not abstract in the base class, so the mixin leaves it alone: the span is ours, and the
        # events below carry its id as they do on the sync path.
        query, top_n, instruction = self._call(query_bundle, top_n, instruction)
        if not nodes:
            return []
        texts, payload = self._start(nodes, query_bundle, query, top_n)
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranking = await self.reranker.arerank(query, texts, **self._options(len(nodes), instruction))
            return self._finish(nodes, ranking[:top_n], ranking.stats, event)

    # -- shared sync/async steps --------------------------------------------------------------
    def _call(
        self, query_bundle: QueryBundle | None, top_n: Any, instruction: str | None
    ) -> tuple[str, int | None, str | None]:
        top_n = self.top_n if top_n is DEFAULT else h.check_top_n(top_n)
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

    def _options(self, count: int, instruction: str | None) -> dict[str, Any]:
        # Every node from the core (its top_n=None would mean "the Reranker's default"); the
        # caller keeps its own top_n.
        return {"top_n": count, "instruction": instruction, "score_threshold": self.score_threshold}

    def _finish(self, nodes: list[NodeWithScore], results: list[Any], stats: Any, event: Any) -> list[NodeWithScore]:
        windows = self.reranker.long_documents == "window"
        keep = self.keep_retrieval_score
        new_nodes = [h.scored_copy(nodes[r.index], r, keep_retrieval_score=keep, windows=windows) for r in results]
        event.on_end(payload={EventPayload.NODES: new_nodes, STATS_PAYLOAD_KEY: h.stats_payload(stats, len(nodes))})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
