"""Qwen3-Reranker as a Haystack ranker component.

The shape is Haystack's own rankers' (``SentenceTransformersSimilarityRanker``,
``TransformersSimilarityRanker``): ``warm_up()`` loads the model, ``run(query, documents, top_k)``
returns ``{"documents": [...]}`` best first with ``Document.score`` set, documents are deduplicated
by id first, ``meta_fields_to_embed`` puts metadata in front of the content, and ``to_dict`` /
``from_dict`` round-trip the settings. The scoring is qwen3-rerank's ``Reranker``, any engine.
"""

# No `from __future__ import annotations`: Haystack reads run()'s annotations at class creation
# to build the component's input and output sockets.

import asyncio
import dataclasses
import logging
import os
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace

from qwen3_rerank import Ranking, Reranker, settings

__all__ = ["Qwen3Ranker"]

logger = logging.getLogger(__name__)

_ENV_KEY = Secret.from_env_var(settings.ENV_API_KEY, strict=False)  # frozen: one default for all


def _check_top_k(top_k: Any) -> int | None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int, or None for all documents; got {top_k!r}")
    return top_k


def _check_threshold(value: Any) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise ValueError(f"score_threshold must be a probability in [0, 1] (scores are P(yes)) or None; got {value!r}")
    return value


def _unique(documents: list[Document]) -> list[Document]:
    # As Haystack's rankers: one Document per id (the one with the highest score, if scored),
    # in the order of first appearance. A DocumentJoiner without dedup can feed duplicates.
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or (doc.score is not None and (kept.score is None or doc.score > kept.score)):
            best[doc.id] = doc
    return list(best.values())


def _credentials_in(base_url: str | Sequence[str] | None) -> bool:
    urls = [] if base_url is None else [base_url] if isinstance(base_url, str) else list(base_url)
    parts = [urllib.parse.urlsplit(u) for url in urls for u in url.split(",")]
    return any(p.password or p.query for p in parts)


@dataclasses.dataclass(frozen=True)
class _Call:
    """One checked run: the unique documents, the texts to score and the core's options."""

    query: str
    documents: list[Document]
    texts: list[str]
    options: dict[str, Any]

    def scored(self, ranking: Ranking) -> list[Document]:
        # Copies, each with its own meta dict: the caller's Documents (and their meta) stay untouched.
        docs = [self.documents[r.index] for r in ranking]
        return [dataclasses.replace(d, score=r.score, meta=dict(d.meta)) for d, r in zip(docs, ranking, strict=True)]


@component
class Qwen3Ranker:
    """Ranks documents for a query with a Qwen3-Reranker model (any qwen3-rerank engine).

    ``Document.score`` of each returned document is P("yes") in [0, 1], the model card's score.
    The returned documents are copies: the ones you pass are never modified.

    Usage example:

    ```python
    from haystack import Document
    from haystack_qwen3_rerank import Qwen3Ranker

    ranker = Qwen3Ranker(model="Qwen/Qwen3-Reranker-0.6B", top_k=2)
    docs = [Document(content="BM25 ranks by term frequency."), Document(content="Paris is in France.")]
    result = ranker.run(query="what is BM25?", documents=docs)
    print(result["documents"][0].content, result["documents"][0].score)
    ```
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        reranker: Reranker | None = None,
        engine: str = "transformers",
        model: str | os.PathLike[str] | None = None,
        base_url: str | list[str] | None = None,
        api_key: Secret | None = _ENV_KEY,
        engine_options: dict[str, Any] | None = None,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        instruction: str | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
    ) -> None:
        """Create the component; the settings are checked now, the model loads in :meth:`warm_up`.

        :param reranker:
            A ready `qwen3_rerank.Reranker` to use (any engine). Excludes `engine`, `model`,
            `base_url` and `engine_options`; :meth:`close` leaves it open; `to_dict` refuses it.
        :param engine:
            The engine to build: `"transformers"` (embedded), `"vllm"` (in-process) or `"remote"`
            (a `vllm serve` at `base_url`).
        :param model:
            Hub id or local directory (default `$QWEN3_RERANK_MODEL`, else `Qwen/Qwen3-Reranker-0.6B`).
        :param base_url:
            The vLLM server(s) of the remote engine (default `$QWEN3_RERANK_BASE_URL`).
        :param api_key:
            The remote server's key, a Haystack `Secret` (default: `$QWEN3_RERANK_API_KEY`, if set).
        :param engine_options:
            More `Reranker(...)` and engine options (`device`, `dtype`, `max_length`, `long_documents`, ...).
        :param top_k:
            Documents to return, best first (`None`: all).
        :param score_threshold:
            Drop documents whose score (P("yes")) is below it.
        :param instruction:
            Task instruction (`None`: the model card's).
        :param meta_fields_to_embed:
            Meta fields whose values are scored with the content, in front of it.
        :param embedding_separator:
            What joins those values and the content.
        :raises ValueError:
            A bad `top_k` or `score_threshold`, an unknown engine option (naming the closest valid
            one), a missing or malformed base URL, or `reranker` together with engine settings.
        """
        self.engine = engine
        self.model = None if model is None else str(model)
        self.base_url = base_url
        self.api_key = api_key
        self.engine_options = dict(engine_options or {})
        self.top_k = _check_top_k(top_k)
        self.score_threshold = _check_threshold(score_threshold)
        self.instruction = instruction
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        if api_key is not None and not isinstance(api_key, Secret):
            # Never echo the value: it may be the key itself.
            raise TypeError(
                f"api_key must be a haystack Secret (Secret.from_env_var(...) or Secret.from_token(...)), "
                f"got {type(api_key).__name__}"
            )
        # The default (or an equal one, as from_dict makes) is no choice; any other key is one.
        own_key = api_key is not None and api_key != _ENV_KEY
        if reranker is not None:
            if not isinstance(reranker, Reranker):
                raise TypeError(f"reranker must be a qwen3_rerank.Reranker, got {type(reranker).__name__}")
            given = [n for n in ("model", "base_url", "engine_options") if getattr(self, n)]
            given += ["api_key"] if own_key else []
            if given or engine != "transformers":
                raise ValueError(
                    f"pass either reranker= or engine settings, not both (got reranker and "
                    f"{given or ['engine']}); configure the engine when you build the Reranker"
                )
        elif own_key and engine != "remote":
            raise ValueError(f"api_key is used by the remote engine only, not by {engine!r}; set engine='remote'")
        else:
            # Unknown options, a base URL without http(s)://, a model path that does not exist:
            # refused now, not when the pipeline first runs. Nothing loads, nothing is contacted.
            settings.reranker_kwargs(engine, model=self.model, base_url=base_url, **self.engine_options)
        self._injected = reranker
        self._reranker: Reranker | None = reranker
        self._lock = threading.Lock()

    # -- the engine ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Build the reranker from the settings (loads the model); later calls do nothing."""
        self._get()

    async def warm_up_async(self) -> None:
        """:meth:`warm_up` in a worker thread, so that loading the model does not block the event
        loop (the engines open their async clients on first use, on the loop that runs)."""
        await self._aget()

    def close(self) -> None:
        """Release the engine this component built (an injected `reranker` is left open)."""
        built = self._release()
        if built is not None:
            built.close()

    async def close_async(self) -> None:
        """Asynchronous :meth:`close` (closes the engine's async clients on this loop)."""
        built = self._release()
        if built is not None:
            await built.aclose()

    def _get(self) -> Reranker:
        with self._lock:
            if self._reranker is None:
                key = self.api_key.resolve_value() if self.api_key is not None and self.engine == "remote" else None
                logger.info("building a %s reranker", self.engine)
                self._reranker = settings.build_reranker(
                    self.engine, model=self.model, base_url=self.base_url, api_key=key, **self.engine_options
                )
            return self._reranker

    async def _aget(self) -> Reranker:
        return self._reranker if self._reranker is not None else await asyncio.to_thread(self._get)

    def _release(self) -> Reranker | None:
        with self._lock:
            if self._injected is not None:
                return None
            built, self._reranker = self._reranker, None
            return built

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Serialise the settings (the key only as the name of its environment variable).

        :raises ValueError:
            For an injected `reranker` (a live object), a `Secret.from_token` key, or a `base_url`
            holding a password or query values: none of them can be written without leaking or
            losing something.
        """
        if self._injected is not None:
            raise ValueError(
                "a Qwen3Ranker built with reranker= cannot be serialised (the Reranker is a live object); "
                "build it from engine=, model=, base_url= and engine_options= to save the pipeline"
            )
        if _credentials_in(self.base_url):
            raise ValueError(
                "base_url holds a password or query values, which to_dict would write in clear; put the "
                f"key in api_key (default ${settings.ENV_API_KEY}) or the URL in ${settings.ENV_BASE_URL}"
            )
        return default_to_dict(
            self,
            engine=self.engine,
            model=self.model,
            base_url=self.base_url,
            api_key=None if self.api_key is None else self.api_key.to_dict(),
            engine_options=self.engine_options,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            instruction=self.instruction,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Qwen3Ranker":
        """Create the component from :meth:`to_dict`'s output (``data`` is not modified)."""
        init = dict(data.get("init_parameters", {}))
        deserialize_secrets_inplace(init, keys=["api_key"])
        return default_from_dict(cls, {**data, "init_parameters": init})

    # -- running --------------------------------------------------------------------------------
    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        instruction: str | None = None,
    ) -> dict[str, list[Document]]:
        """Rank `documents` for `query`, best first.

        Documents are deduplicated by id first, as Haystack's rankers do (the highest-scored
        duplicate is kept). An empty `documents` gives `{"documents": []}` without loading the model.

        :param query:
            The search query.
        :param documents:
            The candidates (not modified).
        :param top_k:
            Documents to return for this run (default: the component's `top_k`).
        :param score_threshold:
            Minimum score for this run (default: the component's).
        :param instruction:
            Task instruction for this run (default: the component's).
        :returns:
            `{"documents": [...]}`: copies of the best documents with `score` = P("yes").
        :raises ValueError:
            A missing query or documents, a bad `top_k` or `score_threshold`.
        """
        call = self._prepare(query, documents, top_k, score_threshold, instruction)
        if call is None:
            return {"documents": []}
        return {"documents": call.scored(self._get().rerank(call.query, call.texts, **call.options))}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        instruction: str | None = None,
    ) -> dict[str, list[Document]]:
        """Asynchronous :meth:`run` through the engine's async path (same arguments and result)."""
        call = self._prepare(query, documents, top_k, score_threshold, instruction)
        if call is None:
            return {"documents": []}
        reranker = await self._aget()
        return {"documents": call.scored(await reranker.arerank(call.query, call.texts, **call.options))}

    def _prepare(
        self, query: Any, documents: Any, top_k: Any, score_threshold: Any, instruction: str | None
    ) -> _Call | None:
        """Every argument checked (before anything loads); ``None`` when there is nothing to rank."""
        if query is None:
            raise ValueError("query is missing: pass the search query as a str, e.g. run(query='...', documents=docs)")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if documents is None:
            raise ValueError("documents is missing: pass a list of haystack Document objects (an empty list is fine)")
        if not isinstance(documents, (list, tuple)):
            raise TypeError(f"documents must be a list of haystack Document objects, got {type(documents).__name__}")
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] must be a haystack Document, got {type(doc).__name__}")
        top_k = self.top_k if top_k is None else _check_top_k(top_k)
        threshold = self.score_threshold if score_threshold is None else _check_threshold(score_threshold)
        if not documents:
            return None
        unique = _unique(list(documents))
        texts = [self._text(d) for d in unique]
        options = {
            # Never None: to the core it means "the Reranker's own top_n" (an injected one may have one).
            "top_n": top_k if top_k is not None else len(texts),
            "score_threshold": threshold,
            "instruction": self.instruction if instruction is None else instruction,
        }
        return _Call(query, unique, texts, options)

    def _text(self, doc: Document) -> str:
        meta = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.embedding_separator.join([*meta, doc.content or ""])
