"""Accelerator detection shared by the embedded engine and the CLI (torch imported lazily)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._exceptions import ConfigurationError, MissingDependencyError

__all__ = ["auto_device", "auto_dtype", "npu_available", "prepare_device", "quiet_transformers"]

_TORCH_NPU_HINT = (
    "torch_npu (Huawei's Ascend backend for PyTorch) is needed for an Ascend NPU: run inside the "
    "vLLM-Ascend image, which has it, or install the torch-npu release made for your torch version"
)


def npu_available() -> bool:
    """True when torch_npu (Huawei Ascend) is installed and sees a device."""
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError:
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu and npu.is_available())


def prepare_device(device: str) -> None:
    """Make ``device`` usable by torch before anything is moved there, or say why it is not.

    ``torch.npu`` and the ``"npu"`` device type exist only once ``torch_npu`` is imported: it is
    imported here for ``"npu"``/``"npu:N"``, and an NPU that is not there fails now, with the
    fix, instead of deep inside ``Module.to``. Other devices are left to torch.

    Raises:
        MissingDependencyError: ``torch_npu`` is not installed.
        ConfigurationError: ``torch_npu`` sees no NPU, or not the one numbered ``N``.
    """
    kind, _, index = device.partition(":")
    if kind != "npu":
        return
    import torch

    try:
        import torch_npu  # noqa: F401  (registers torch.npu and the "npu" device type)
    except ImportError as exc:
        raise MissingDependencyError(f"device={device!r}: {_TORCH_NPU_HINT}") from exc
    count = int(torch.npu.device_count()) if torch.npu.is_available() else 0  # type: ignore[attr-defined]  # added by torch_npu
    if count == 0:
        raise ConfigurationError(
            f"device={device!r}, but torch_npu sees no NPU (torch.npu.is_available() is False): check the "
            "driver mounts of the container and ASCEND_RT_VISIBLE_DEVICES, or choose device='cpu'"
        )
    if index.isdigit() and int(index) >= count:
        raise ConfigurationError(
            f"device={device!r}, but torch_npu sees {count} NPU(s), numbered 0 to {count - 1}: choose one of those"
        )


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
