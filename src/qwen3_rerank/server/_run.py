"""Running an app with uvicorn: the bound address once listening, graceful shutdown on signals.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets every request already accepted
finish (at most ``graceful_timeout`` seconds), then runs the app's lifespan shutdown, which
drains the batcher and closes the engine: no accepted request is lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

__all__ = ["Server", "build_server"]


class Server(uvicorn.Server):
    """``uvicorn.Server`` that reports where it listens once it does (port 0 gets a free port)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.url: str | None = None
        self.stopped_by: str | None = None
        """The signal's name (``"SIGTERM"``) once one asked the server to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after its graceful shutdown (the process then dies from it,
        # before the caller can say it stopped); here the shutdown is the end: run() returns.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: Any) -> None:
        self.stopped_by = signal.Signals(sig).name
        self.handle_exit(sig, frame)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self.config.host, self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                host, port = sock.getsockname()[:2]
                break
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"http://{shown}:{port}"
        if self.on_started is not None:
            self.on_started(self.url)


def build_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    graceful_timeout: float = 60.0,
    on_started: Callable[[str], None] | None = None,
) -> Server:
    """A :class:`Server` for ``app`` (``server.run()`` blocks until a signal ends it)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(graceful_timeout)),  # uvicorn takes whole seconds
        access_log=log_level == "debug",
        server_header=False,
    )
    return Server(config, on_started)
