"""The ground floor of settings: default model, environment variable names, and how they resolve.

Everything that builds an engine (``Reranker("name")``, :mod:`qwen3_rerank.settings`, the CLI, the
integrations, the server and the batch job) reaches these through the one factory in
:mod:`qwen3_rerank.engines`; this module imports nothing of the package but its exceptions, so
the engines can use it without reaching up into :mod:`qwen3_rerank.settings`.

* :data:`ENV_MODEL` (``QWEN3_RERANK_MODEL``): the model when none is given;
* :data:`ENV_BASE_URL` (``QWEN3_RERANK_BASE_URL``): the server(s) of the remote engine, commas
  between replicas;
* :data:`ENV_API_KEY` (``QWEN3_RERANK_API_KEY``): the remote engine's bearer token.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_MODEL",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "redact_url",
    "resolve_api_key",
    "resolve_base_urls",
    "resolve_model",
]

DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"
"""The checkpoint the local engines load when neither ``model`` nor ``$QWEN3_RERANK_MODEL`` is set."""

ENV_MODEL = "QWEN3_RERANK_MODEL"
ENV_BASE_URL = "QWEN3_RERANK_BASE_URL"
ENV_API_KEY = "QWEN3_RERANK_API_KEY"

# A list of URLs is split at commas that start a new URL: a comma inside one (a query token such
# as ?token=a,b) does not split it.
_URL_LIST_SPLIT = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def redact_url(url: str) -> str:
    """``url`` with its credentials and query values replaced by ``***`` (for messages and logs).

    A password is hidden and the user name kept (``me:***@host``); a user name without a password
    is itself a token (``https://TOKEN@host``) and is hidden (``***@host``).

    Example:
        >>> redact_url("http://me:pw@gw:80/x?token=abc&v=1")
        'http://me:***@gw:80/x?token=***&v=***'
        >>> redact_url("https://sk-123@gw/v1")
        'https://***@gw/v1'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that cannot be shown>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, sep, _password = user.partition(":")
        netloc = f"{name}:***@{host}" if sep else f"***@{host}"
    query = parts.query
    if query:
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}=***" if sep else "***" for k, sep, _ in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def resolve_model(model: str | os.PathLike[str] | None = None, *, default: str | None = DEFAULT_MODEL) -> str | None:
    """The model to use: ``model``, else ``$QWEN3_RERANK_MODEL``, else ``default``.

    An engine that can ask its server which model it serves passes ``default=None``.
    """
    if model is not None and str(model):
        return str(model)
    return os.environ.get(ENV_MODEL) or default


def resolve_base_urls(base_url: str | Sequence[str] | None = None) -> list[str]:
    """The remote engine's server URLs: ``base_url``, else ``$QWEN3_RERANK_BASE_URL``.

    A string may hold several URLs separated by commas (a comma inside a URL, as in a query
    token, does not split it). Returns ``[]`` when neither is set. The scheme may be written in
    any case (``HTTP://``); it is given back lower-case.

    Raises:
        ConfigurationError: a URL does not start with ``http://`` or ``https://`` (shown with its
            credentials hidden).
    """
    items: list[Any] = [] if base_url is None else [base_url] if isinstance(base_url, str) else list(base_url)
    source = ""
    if not any(items):  # None, "", [] or [""]
        items, source = [os.environ.get(ENV_BASE_URL, "")], f" (from ${ENV_BASE_URL})"
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"base_url must be a URL string or a list of them, got {type(item).__name__}")
        urls += [u.strip() for u in _URL_LIST_SPLIT.split(item) if u.strip()]
    checked = []
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ConfigurationError(
                f"a base URL must start with http:// or https://, got {redact_url(url)!r}{source}; "
                "e.g. http://127.0.0.1:8000"
            )
        checked.append(f"{scheme.lower()}://{rest}")
    return checked


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The remote engine's API key: ``api_key``, else ``$QWEN3_RERANK_API_KEY``, else ``None``."""
    return api_key or os.environ.get(ENV_API_KEY) or None
