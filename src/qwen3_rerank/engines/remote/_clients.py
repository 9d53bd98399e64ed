"""The HTTP clients a :class:`~._requester.Requester` sends with: made on first use, one
``AsyncClient`` per live event loop, one proxy rule for both (:func:`~._transport.env_proxy`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._transport import deadline_transport, proxy_mounts, socks_available

__all__ = ["Clients"]


class Clients:
    """Owns the clients it creates; an injected ``client``/``async_client`` is used as it is."""

    def __init__(
        self,
        base_urls: tuple[str, ...],
        *,
        limits: Any,
        timeout: float,
        client: Any,
        async_client: Any,
        transport: Any,
        async_transport: Any,
        check_open: Callable[[], None],
    ) -> None:
        import httpx

        self._httpx = httpx
        self.base_urls = base_urls
        self._limits = limits
        self.timeout = timeout
        self._transport = transport
        self._async_transport = async_transport if async_transport is not None else transport
        self._client = client
        self._owns_client = client is None
        self._async_client = async_client
        self._owns_async_client = async_client is None
        # Owned async clients, one per live event loop, each with the task that closes it.
        self._async_clients: weakref.WeakKeyDictionary[Any, tuple[Any, asyncio.Task[None]]] = (
            weakref.WeakKeyDictionary()
        )
        self.async_made = 0
        self._check_open = check_open
        self._lock = threading.RLock()

    # -- clients -----------------------------------------------------------------------------------
    def sync(self) -> Any:
        if self._client is None:
            with self._lock:
                self._check_open()
                if self._client is None:
                    transport, mounts = self._transport, {}
                    if transport is None:  # ours: every socket read is bounded by the deadline
                        transport = deadline_transport(limits=self._limits)
                        mounts = proxy_mounts(self.base_urls, self._sync_proxy)
                    self._client = self._httpx.Client(transport=transport, mounts=mounts, timeout=self.timeout)
        return self._client

    def for_this_loop(self) -> Any:
        """The injected ``AsyncClient``, or this loop's own (an ``AsyncClient``'s connections belong
        to one event loop): one per live loop, made once, closed by a keeper task when its loop
        ends (``asyncio.run`` cancels it at the end) or by :meth:`close`."""
        if not self._owns_async_client:
            return self._async_client
        loop = asyncio.get_running_loop()
        with self._lock:
            self._check_open()
            entry = self._async_clients.get(loop)
            if entry is None or entry[0].is_closed:
                transport, mounts = self._async_transport, {}
                if transport is None:  # the proxy rule of the sync client (env_proxy), not httpx's
                    transport = self._httpx.AsyncHTTPTransport(limits=self._limits)
                    mounts = proxy_mounts(self.base_urls, self._async_proxy)
                client = self._httpx.AsyncClient(transport=transport, mounts=mounts, timeout=self.timeout)
                entry = (client, loop.create_task(_close_at_loop_end(client)))
                self._async_clients[loop] = entry
                self.async_made += 1
            return entry[0]

    def _sync_proxy(self, proxy: str) -> Any:
        return deadline_transport(limits=self._limits, proxy=proxy)

    def _async_proxy(self, proxy: str) -> Any:
        if proxy.lower().startswith("socks"):
            socks_available()
        return self._httpx.AsyncHTTPTransport(limits=self._limits, proxy=proxy)

    def close(self) -> None:
        """Close the clients owned (idempotent); injected ones stay open."""
        with self._lock:
            client, self._client = (self._client, None) if self._owns_client else (None, self._client)
            entries = list(self._async_clients.items())
            self._async_clients.clear()
        if client is not None:
            client.close()
        for loop, (aclient, keeper) in entries:
            if aclient.is_closed or loop.is_closed():
                continue
            # The keeper task closes the client on its own loop when cancelled.
            if keeper.done():
                if not loop.is_running():
                    loop.run_until_complete(aclient.aclose())
            elif not loop.is_running():
                keeper.cancel()
                loop.run_until_complete(asyncio.gather(keeper, return_exceptions=True))
            elif _on_loop(loop):  # close() called by sync code on the loop: the keeper ends soon after
                keeper.cancel()
            else:
                # A loop that is ending ends its keeper too.
                with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                    asyncio.run_coroutine_threadsafe(_cancel(keeper), loop).result(timeout=10)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async_clients.pop(loop, None)
        if entry is not None:
            client, keeper = entry
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if not client.is_closed:
                await client.aclose()
        self.close()


def _on_loop(loop: Any) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _close_at_loop_end(client: Any) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        if not client.is_closed:
            await client.aclose()
