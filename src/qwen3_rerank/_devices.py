"""Accelerator detection shared by the embedded engine and the CLI (torch imported lazily)."""

from __future__ import annotations

from typing import Any

__all__ = ["auto_device", "auto_dtype", "npu_available"]


def npu_available() -> bool:
    """True when torch_npu (Huawei Ascend) is installed and sees a device."""
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError:
        return False
    return bool(getattr(torch, "npu", None) and torch.npu.is_available())


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
