"""A real ``qwen3-rerank`` HTTP server (uvicorn) on 127.0.0.1 in a thread of the test process."""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["ThreadServer"]


class ThreadServer:
    """Serve ``app`` on a free port of 127.0.0.1 until :meth:`stop`; ``.base_url`` once ready.

    Args:
        app: The ASGI app (``qwen3_rerank.server.create_app(...)``).
        wait_ready: Wait for ``GET /health`` to answer 200 (the engine loaded) before returning.
    """

    def __init__(self, app: Any, *, wait_ready: bool = True, timeout: float = 120.0) -> None:
        import httpx

        from qwen3_rerank.server._run import build_server

        self.app = app
        self.server = build_server(app, host="127.0.0.1", port=0, log_level="warning", graceful_timeout=30)
        self.thread = threading.Thread(target=self.server.run, name="rerank-test-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while self.server.url is None:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.base_url: str = self.server.url
        if wait_ready:
            with httpx.Client(base_url=self.base_url, timeout=10) as client:
                while client.get("/health").status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the test server did not become ready")
                    time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
