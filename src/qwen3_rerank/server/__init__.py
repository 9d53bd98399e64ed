"""The HTTP server: Qwen3-Reranker behind the Cohere, Jina, text-embeddings-inference and vLLM
rerank APIs (``pip install 'qwen3-rerank[server]'``; ``qwen3-rerank serve`` on the command line).

Importing this package imports FastAPI; ``import qwen3_rerank`` does not import it.

Modules: :mod:`._app` (the factory, lifespan, routes), :mod:`._cohere`, :mod:`._tei`,
:mod:`._vllm` (one per API dialect), :mod:`._inputs` (pre-formatted prompts, limits),
:mod:`._batching` (dynamic batching), :mod:`._state`, :mod:`._auth`, :mod:`._errors`,
:mod:`._metrics`, :mod:`._config`, :mod:`._run` (uvicorn with graceful shutdown).

Example:
    >>> from qwen3_rerank import Reranker
    >>> from qwen3_rerank.server import create_app
    >>> app = create_app(Reranker("transformers", model="Qwen/Qwen3-Reranker-0.6B"))  # doctest: +SKIP
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._exceptions import missing_dependency

    raise missing_dependency("fastapi", "server", exc) from exc

from ._app import ROUTES, create_app
from ._auth import ENV_SERVER_API_KEY, ApiKeys, load_api_keys
from ._config import BatchingConfig, ServerLimits

__all__ = ["ENV_SERVER_API_KEY", "ROUTES", "ApiKeys", "BatchingConfig", "ServerLimits", "create_app", "load_api_keys"]
