"""Shared helpers: timing, FLOP counts, machine description, result records (JSON lines)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

H100_BF16_PEAK = 790e12  # measured bf16 GEMM rate of one H100 (the device machine's measured figure)


def shape_config(shape: str) -> dict[str, int]:
    from qwen3_rerank.testing import SHAPES

    return dict(SHAPES[shape])


def flops_per_sequence(shape: str, length: int) -> float:
    """Useful forward FLOPs of one sequence: decoder GEMMs + causal attention + the 2-row head.

    Counts 2 FLOPs per multiply-add on real (unpadded) tokens only; the full-vocabulary LM head
    that the model card computes is not useful work and is not counted.
    """
    c = shape_config(shape)
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    q = c["num_attention_heads"] * c["head_dim"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    per_token = layers * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    attention = layers * 2 * q * length * (length + 1) / 2  # QK^T and AV over the causal triangle
    return 2.0 * (per_token * length + attention) + 2.0 * 2 * h


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    for mod in ("transformers", "vllm"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001, S112 - a version that cannot be read is left out
            continue
    return info


class Recorder:
    """Appends one JSON object per measurement to ``path`` and prints a short line."""

    def __init__(self, path: str | os.PathLike[str], **context: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.context = context

    def add(self, **record: Any) -> dict[str, Any]:
        rec = {**self.context, **record, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        keys = (
            "shape",
            "workload",
            "engine",
            "pairs_per_s",
            "tokens_per_s",
            "peak_frac",
            "peak_mem_gib",
            "ratio",
            "note",
        )
        print("RESULT " + " ".join(f"{k}={rec[k]}" for k in keys if k in rec), flush=True)
        return rec


def timing(shape: str, lengths: list[int], times: list[float]) -> dict[str, Any]:
    """The fields every throughput record carries: pairs, tokens, median time, rates, % of peak."""
    t = median(times)
    pairs, tokens = len(lengths), sum(lengths)
    flops = sum(flops_per_sequence(shape, n) for n in lengths)
    return dict(
        pairs=pairs,
        tokens=tokens,
        mean_tokens=round(tokens / pairs, 1),
        seconds=round(t, 4),
        seconds_all=[round(x, 4) for x in times],
        pairs_per_s=round(pairs / t, 1),
        tokens_per_s=round(tokens / t),
        peak_frac=round(flops / t / H100_BF16_PEAK, 4),
    )


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def log(*args: Any) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


class GpuBusy:
    """Samples ``nvidia-smi``'s ``utilization.gpu`` (the share of time a kernel was running) every
    100 ms while the block runs; ``.mean`` is the average over the samples (``None`` without
    nvidia-smi). A profile of who waits on whom: near 100 the GPU is never idle (the kernels set
    the pace), well below 100 the GPU waits on the host (Python, scheduling, tokenization).
    """

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.mean: float | None = None
        self._proc: Any = None

    def __enter__(self) -> GpuBusy:
        import shutil
        import subprocess

        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self.samples = [float(x) for x in out.split() if x.strip().replace(".", "", 1).isdigit()]
        # The first sample can predate the block; drop it when there are enough.
        body = self.samples[1:] if len(self.samples) > 3 else self.samples
        self.mean = round(statistics.fmean(body), 1) if body else None
