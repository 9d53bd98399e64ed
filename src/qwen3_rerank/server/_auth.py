"""API keys: where they come from, and the constant-time check of ``Authorization: Bearer``.

Keys are read from ``$QWEN3_RERANK_SERVER_API_KEY`` (commas between several) and from a key file
(one key a line, ``#`` comments), never only from a command-line flag that ``ps`` would show.
No key is ever logged, shown in an error or stored anywhere but in :class:`ApiKeys`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from .._exceptions import ConfigurationError

__all__ = ["ENV_SERVER_API_KEY", "ApiKeys", "load_api_keys"]

ENV_SERVER_API_KEY = "QWEN3_RERANK_SERVER_API_KEY"
"""The environment variable holding the server's API key(s), commas between several."""


class ApiKeys:
    """The accepted keys; with none configured, every request is accepted.

    ``repr`` shows how many keys there are, never one of them.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        cleaned = []
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"an API key must be a str, got {type(key).__name__}")
            key = key.strip()
            if not key:
                continue
            if any(c.isspace() for c in key) or not key.isprintable():
                raise ConfigurationError("an API key must be one word of printable characters (no spaces)")
            cleaned.append(key.encode())
        self._keys: tuple[bytes, ...] = tuple(cleaned)

    @property
    def required(self) -> bool:
        """Whether requests must carry a key."""
        return bool(self._keys)

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value passes.

        With no key configured everything passes, an empty ``Bearer `` (Open WebUI) or no header
        (Dify, RAGFlow) included. Otherwise the token is compared with every key in constant time.
        """
        if not self._keys:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = token.strip().encode()
        ok = False
        for key in self._keys:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(given, key)
        return ok

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._keys)} configured)"


def load_api_keys(key_file: str | os.PathLike[str] | None = None, *, environ: dict[str, str] | None = None) -> ApiKeys:
    """The keys of ``$QWEN3_RERANK_SERVER_API_KEY`` and of ``key_file`` together.

    Raises:
        ConfigurationError: ``key_file`` cannot be read, or holds no key.
    """
    env = os.environ if environ is None else environ
    keys = [k for k in env.get(ENV_SERVER_API_KEY, "").split(",") if k.strip()]
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read the API key file {str(path)!r}: {exc.__class__.__name__}") from None
        from_file = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ConfigurationError(f"the API key file {str(path)!r} holds no key (one key a line)")
        keys += from_file
    return ApiKeys(keys)
