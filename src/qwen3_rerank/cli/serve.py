"""``qwen3-rerank serve``: the exact Qwen3-Reranker behind the Cohere, Jina, TEI and vLLM APIs."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys
from typing import Any

from . import _engine
from ._base import EXIT_OK, CLIError, CLISubcommand, non_negative_int, positive_float, positive_int

__all__ = ["ServeCommand"]


class ServeCommand(CLISubcommand):
    name = "serve"
    help = "serve the reranker over HTTP (Cohere, Jina, TEI and vLLM rerank APIs)"
    description = (
        "Serve the reranker to any RAG app: POST /v1/rerank and /rerank (Cohere v1, Jina; TEI's "
        "{query, texts} body too), /v2/rerank (Cohere v2), /score and /classify (vLLM), GET /info, "
        "/health, /v1/models, /metrics, /version. API keys: $QWEN3_RERANK_SERVER_API_KEY (commas "
        "between several) and/or --api-key-file; without one, every request is accepted."
    )

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
        p.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000; 0 picks a free one)")
        p.add_argument(
            "--served-model-name", default=None, help="model name reported by /v1/models and /info (default: --model)"
        )
        p.add_argument(
            "--instruction", "-i", default=None, help="default task instruction (a request's instruction overrides it)"
        )
        p.add_argument("--long-documents", choices=("truncate", "window"), default="truncate",
                       help="truncate (default): cut what does not fit --max-length; window: best window")  # fmt: skip
        p.add_argument("--api-key-file", default=None, metavar="FILE",
                       help="file with accepted API keys, one a line (with $QWEN3_RERANK_SERVER_API_KEY)")  # fmt: skip
        lim = p.add_argument_group("limits")
        lim.add_argument("--max-body-bytes", type=positive_int, default=8 * 1024 * 1024,
                         help="largest request body (default 8 MiB; 413 beyond)")  # fmt: skip
        lim.add_argument("--max-documents", type=positive_int, default=1000,
                         help="most documents per request (default 1000; 422 beyond)")  # fmt: skip
        lim.add_argument("--max-document-chars", type=positive_int, default=100_000,
                         help="most characters per document or query (default 100000; 422 beyond)")  # fmt: skip
        b = p.add_argument_group("batching")
        b.add_argument("--max-batch-pairs", type=positive_int, default=256,
                       help="most pairs coalesced into one engine call (default 256)")  # fmt: skip
        b.add_argument("--batch-wait-ms", type=_non_negative_float, default=5.0,
                       help="how long an idle server waits for more requests to join a batch (default 5)")  # fmt: skip
        b.add_argument("--max-queued-requests", type=positive_int, default=256,
                       help="requests waiting for the engine before 429 (default 256)")  # fmt: skip
        b.add_argument("--max-pairs-in-flight", type=positive_int, default=4096,
                       help="--engine vllm: most pairs submitted to vLLM at once (default 4096)")  # fmt: skip
        p.add_argument("--graceful-timeout", type=positive_float, default=60.0,
                       help="seconds to finish accepted requests after SIGTERM/SIGINT (default 60)")  # fmt: skip
        _engine.add_engine_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
        if missing:
            names = ", ".join(missing)
            raise CLIError(f"{names} not installed; install the server with: pip install 'qwen3-rerank[server]'")
        from .._exceptions import ConfigurationError
        from ..server import BatchingConfig, ServerLimits, create_app, load_api_keys
        from ..server._app import ROUTES
        from ..server._run import build_server

        _engine.engine_kwargs(args)  # bad engine options fail before anything binds or loads
        try:
            keys = load_api_keys(args.api_key_file)
        except ConfigurationError as exc:
            raise CLIError(str(exc)) from None
        limits = ServerLimits(max_body_bytes=args.max_body_bytes, max_documents=args.max_documents,
                              max_document_chars=args.max_document_chars)  # fmt: skip
        batching = BatchingConfig(max_batch_pairs=args.max_batch_pairs, max_wait_ms=args.batch_wait_ms,
                                  max_queued_requests=args.max_queued_requests,
                                  max_pairs_in_flight=args.max_pairs_in_flight)  # fmt: skip
        sock = _bind(args.host, args.port)
        try:
            if not keys.required and not _is_loopback(args.host):
                _say(f"warning: listening on {args.host} with no API key; set $QWEN3_RERANK_SERVER_API_KEY "
                     "or --api-key-file")  # fmt: skip
            reranker = self._reranker(args)
            app = create_app(reranker, served_model_name=args.served_model_name, api_keys=keys, limits=limits,
                             batching=batching, close_reranker=True)  # fmt: skip
            name = args.served_model_name or reranker.engine.model_name

            def started(url: str) -> None:
                routes = ", ".join(f"{m} {p}" for m, p in ROUTES)
                auth = f"{'API key required' if keys.required else 'no API key'}"
                _say(f"serving {name} ({reranker.engine.name} engine, {auth}) on {url}")
                _say(f"routes: {routes}")
                _say("stop with Ctrl-C or SIGTERM (accepted requests finish first)")

            server = build_server(app, host=args.host, port=args.port,
                                  log_level="info" if args.verbose else "warning",
                                  graceful_timeout=args.graceful_timeout, on_started=started)  # fmt: skip
            try:
                server.run(sockets=[sock])
            finally:
                reranker.close()  # idempotent: the app's shutdown closed it already
        finally:
            sock.close()
        _say(f"stopped ({server.stopped_by or 'shut down'}); the engine is closed")
        return EXIT_OK

    @staticmethod
    def _reranker(args: argparse.Namespace) -> Any:
        from .._reranker import Reranker

        engine = _engine.build_engine(args)
        options: dict[str, Any] = {"long_documents": args.long_documents}
        if args.max_length is not None:
            options["max_length"] = args.max_length
        try:
            return Reranker(engine, instruction=args.instruction, **options)
        except BaseException:
            engine.close()
            raise


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the engine loads: a taken port fails at once, in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"--host {host!r} is not an address this machine can listen on ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _say(message: str) -> None:
    print(f"qwen3-rerank serve: {message}", file=sys.stderr, flush=True)
