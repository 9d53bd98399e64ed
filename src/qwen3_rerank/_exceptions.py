"""Exceptions raised by qwen3-rerank.

The tree::

    Qwen3RerankError
    ├── ConfigurationError (also ValueError)   a setting or a checkpoint that cannot work
    ├── MissingDependencyError (also ImportError)   an optional engine's package is not installed
    └── EngineError (also RuntimeError)        the engine failed or returned something unusable
        ├── InvalidScoreError                 non-finite / out-of-range / missing scores
        └── RemoteError                       an HTTP engine failed (status, url, body excerpt)
            ├── RemoteTimeoutError            no answer within the time budget
            ├── AuthenticationError           401/403: set the API key
            └── TemplateMismatchError         the server counted other tokens than we sent

Bad arguments to public functions raise the built-in ``TypeError`` / ``ValueError`` with a message
that names the value and the fix.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "EngineError",
    "InvalidScoreError",
    "MissingDependencyError",
    "Qwen3RerankError",
    "RemoteError",
    "RemoteTimeoutError",
    "TemplateMismatchError",
]


class Qwen3RerankError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(Qwen3RerankError, ValueError):
    """A setting, a model or a checkpoint that cannot work; the message says what to change."""


class MissingDependencyError(Qwen3RerankError, ImportError):
    """An optional dependency of the chosen engine is missing; the message names the extra."""


class EngineError(Qwen3RerankError, RuntimeError):
    """The engine failed, or returned something that cannot be a valid answer."""


class InvalidScoreError(EngineError):
    """An engine returned a NaN/inf score, a probability outside [0, 1], or the wrong count."""


class RemoteError(EngineError):
    """An HTTP request to a reranking server failed.

    Attributes:
        status_code: The HTTP status, or ``None`` when no response arrived.
        url: The URL that was called.
        body: The first few hundred characters of the response body (never the request).
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, url: str | None = None, body: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url
        self.body = body


class RemoteTimeoutError(RemoteError):
    """No complete answer arrived within the configured time budget."""


class AuthenticationError(RemoteError):
    """The server refused the credentials (401/403); retrying will not help."""


class TemplateMismatchError(RemoteError):
    """The server scored a different token sequence than the one we built.

    This is how a server that applies no template, or applies it twice, is caught: its answer is
    HTTP 200 with meaningless scores.
    """


def missing_dependency(package: str, extra: str, exc: BaseException | None = None) -> MissingDependencyError:
    """Build the error for a missing optional package, naming the extra that installs it."""
    err = MissingDependencyError(
        f"{package!r} is not installed; it is needed by this engine. Install it with: "
        f"pip install 'qwen3-rerank[{extra}]'"
    )
    err.__cause__ = exc
    return err
