"""Pure helpers of :class:`~llama_index.postprocessor.qwen3_rerank.Qwen3Rerank`, shared by its sync
and async paths: the text the model reads, the scored copies, the stats payload."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from llama_index.core.bridge.pydantic import SecretStr
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from qwen3_rerank import RerankResult, RerankStats, settings

RETRIEVAL_SCORE_KEY = "retrieval_score"
"""Metadata key of the retriever's score on returned nodes when ``keep_retrieval_score=True``."""

STATS_PAYLOAD_KEY = "rerank_stats"
"""Key of the stats dict (every field of :class:`qwen3_rerank.RerankStats`, plus ``documents``) in
the end payload of the ``CBEventType.RERANKING`` callback event."""


def secret_from_env(name: str) -> SecretStr | None:
    """The variable's value as a ``SecretStr`` (never a plain string in the model's input)."""
    value = os.environ.get(name)
    return SecretStr(value) if value else None


def bundle(query_bundle: QueryBundle | None, query_str: str | None) -> QueryBundle | None:
    # As BaseNodePostprocessor.postprocess_nodes does.
    if query_str is not None and query_bundle is not None:
        raise ValueError("Cannot specify both query_str and query_bundle")
    return QueryBundle(query_str) if query_str is not None else query_bundle


def query_of(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None or query_bundle.query_str is None:
        raise ValueError(
            "Qwen3Rerank needs the query: call postprocess_nodes(nodes, query_str='...') or pass "
            "query_bundle=QueryBundle('...') (query engines pass it for you)"
        )
    if not isinstance(query_bundle.query_str, str):
        raise TypeError(f"query_str must be a str, got {type(query_bundle.query_str).__name__}")
    return query_bundle.query_str


def node_text(node: BaseNode, mode: MetadataMode) -> str:
    """The node's content, THEN its metadata (as ``mode`` selects it).

    LlamaIndex's own templates put metadata first; a document that does not fit ``max_length`` is
    cut from its end, so long metadata would push the content out. Content first keeps it scored.
    """
    content = node.get_content(metadata_mode=MetadataMode.NONE)
    metadata = node.get_metadata_str(mode=mode).strip()
    return f"{content}\n\n{metadata}" if metadata else content


def scored_copy(
    scored: NodeWithScore, result: RerankResult, *, keep_retrieval_score: bool, windows: bool
) -> NodeWithScore:
    """A new ``NodeWithScore`` on a copy of the node, with the rerank details in its metadata.

    The copy, its metadata dict and its exclusion lists are new (shallow copies): metadata values
    (locks, clients, file handles) are shared, never copied, so they cannot make the call fail. The
    added keys are kept out of the text the LLM and the embedding model read.
    """
    node = scored.node
    added = settings.result_metadata(result, windows=windows)
    if keep_retrieval_score:
        added[RETRIEVAL_SCORE_KEY] = scored.score
    llm_excluded = list(node.excluded_llm_metadata_keys)
    embed_excluded = list(node.excluded_embed_metadata_keys)
    for excluded in (llm_excluded, embed_excluded):
        excluded += [key for key in added if key not in excluded]
    copy = node.model_copy(
        update={
            "metadata": {**node.metadata, **added},
            "excluded_llm_metadata_keys": llm_excluded,
            "excluded_embed_metadata_keys": embed_excluded,
            "relationships": dict(node.relationships),
        }
    )
    return NodeWithScore(node=copy, score=result.score)


def stats_payload(stats: RerankStats, documents: int) -> dict[str, Any]:
    """Every field of the call's RerankStats, plus how many nodes came in."""
    return {**dataclasses.asdict(stats), "documents": documents}
