"""Accelerator detection shared by the embedded engine and the CLI (torch imported lazily)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ._exceptions import ConfigurationError, MissingDependencyError

logger = logging.getLogger("qwen3_rerank")

__all__ = ["auto_device", "auto_dtype", "npu_available", "prepare_device", "quiet_transformers"]

_TORCH_NPU_HINT = (
    "torch_npu (Huawei's Ascend backend for PyTorch) is needed for an Ascend NPU: run inside the "
    "vLLM-Ascend image, which has it, or install the torch-npu release made for your torch version"
)


_BROKEN_TORCH_NPU = (OSError, RuntimeError)
"""What a torch_npu that is installed but cannot load raises on import (a missing CANN library,
``libhccl.so: cannot open shared object file``; a torch / torch_npu version mismatch)."""


def npu_available() -> bool:
    """True when torch_npu (Huawei Ascend) is installed and sees a device.

    A torch_npu whose import fails (:data:`_BROKEN_TORCH_NPU`) counts as no NPU, with a warning
    that says why: the default device then falls back to the CPU instead of failing.
    """
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError:
        return False
    except _BROKEN_TORCH_NPU as exc:
        logger.warning(
            "torch_npu is installed but cannot be imported (%s: %s), so no Ascend NPU is used; "
            "source the CANN environment (set_env.sh) or install the torch-npu release made for this torch",
            type(exc).__name__,
            " ".join(str(exc).split())[:300],
        )
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu and npu.is_available())


def prepare_device(device: str) -> None:
    """Make ``device`` usable by torch before anything is moved there, or say why it is not.

    ``torch.npu`` and the ``"npu"`` device type exist only once ``torch_npu`` is imported: it is
    imported here for ``"npu"``/``"npu:N"``, and an NPU that is not there fails now, with the
    fix, instead of deep inside ``Module.to``. Other devices are left to torch.

    ``"cuda"``/``"cuda:N"`` is checked the same way: on a CPU-only torch build (or a host whose
    driver torch cannot use) it fails now, with the fix, instead of after the model load.

    Raises:
        MissingDependencyError: ``torch_npu`` is not installed.
        ConfigurationError: ``torch_npu`` cannot be imported or sees no NPU (or not the one
            numbered ``N``); torch sees no CUDA device (or not the one numbered ``N``).
    """
    kind, _, index = device.partition(":")
    if kind == "cuda":
        _check_cuda(device, index)
        return
    if kind != "npu":
        return
    import torch

    try:
        import torch_npu  # noqa: F401  (registers torch.npu and the "npu" device type)
    except ImportError as exc:
        raise MissingDependencyError(f"device={device!r}: {_TORCH_NPU_HINT}") from exc
    except _BROKEN_TORCH_NPU as exc:
        raise ConfigurationError(
            f"device={device!r}, but torch_npu cannot be imported ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}): source the CANN environment (set_env.sh) or install the "
            "torch-npu release made for this torch, or choose device='cpu'"
        ) from exc
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


def _check_cuda(device: str, index: str) -> None:
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = (
            f"this torch ({torch.__version__}) is a CPU-only build"
            if build is None
            else f"torch (built for CUDA {build}) sees no CUDA device: check the driver and CUDA_VISIBLE_DEVICES"
        )
        raise ConfigurationError(
            f"device={device!r}, but torch.cuda.is_available() is False: {why}. Choose device='cpu' (or 'auto'), "
            "or install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
        )
    count = int(torch.cuda.device_count())
    if index.isdigit() and int(index) >= count:
        raise ConfigurationError(
            f"device={device!r}, but torch sees {count} CUDA device(s), numbered 0 to {count - 1}: choose one of those"
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
