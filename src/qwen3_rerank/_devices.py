"""Accelerator detection shared by the embedded engine and the CLI (torch imported lazily)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["auto_device", "auto_dtype", "npu_available", "quiet_transformers"]


def npu_available() -> bool:
    """True when torch_npu (Huawei Ascend) is installed and sees a device."""
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError:
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu and npu.is_available())


def auto_device() -> str:
    """CUDA first, then Ascend NPU, then CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if npu_available():
        return "npu"
    return "cpu"


def auto_dtype(device: str) -> Any:
    """bfloat16 on accelerators, float32 on CPU (CPU bf16 matmuls are slow and less exact)."""
    import torch

    return torch.float32 if device.split(":")[0] == "cpu" else torch.bfloat16


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights", "Writing model shards") meanwhile.

    A library must not write to the terminal of the program that uses it; transformers draws
    its bars on stderr unless told not to. The previous setting is restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
