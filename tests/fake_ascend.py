"""A simulated Ascend stack for unit tests: ``torch_npu`` and vLLM-Ascend's vLLM platform.

No NPU is available in CI, so the library's Ascend branches run against these fakes:

* :func:`install_torch_npu`: a ``torch_npu`` that, like the real one, does its work *when it is
  imported*: only then does ``torch.npu`` exist (``is_available``, ``device_count``,
  ``get_device_name``, ``empty_cache``) and does torch accept the ``"npu"`` device type. Tensors
  "on the NPU" are CPU tensors: ``Tensor.to`` and ``Module.to`` read ``"npu"``/``"npu:N"`` as
  ``"cpu"``, so real torch computes everything (factory functions such as ``torch.tensor`` are
  left alone: torch caches them by identity for its device context). Before the import, real
  torch refuses ``"npu"`` exactly as it does without torch_npu.
* :func:`install_vllm_ascend`: a ``vllm`` package as the vLLM-Ascend image has it (vLLM 0.23 built
  for no device, ``vllm.platforms.current_platform`` an ``NPUPlatform`` from ``vllm_ascend``, the
  platform plugin entry point ``ascend = vllm_ascend:register``), with an ``AsyncLLM`` that
  records the engine arguments it was started with and scores by a fixed function of the ids.

Everything is installed through pytest's ``monkeypatch`` and undone with it: no module, attribute
or path outlives the test.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

TORCH_NPU_VERSION = "2.10.0.post4"  # what the vLLM-Ascend 0.23.0 image pins
VLLM_VERSION = "0.23.0+empty"  # vLLM 0.23.0 built with VLLM_TARGET_DEVICE=empty, as in that image
VLLM_ASCEND_VERSION = "0.23.0"


# -- torch_npu -----------------------------------------------------------------------------------
class FakeNPU:
    """``torch.npu`` as torch_npu adds it: the devices it sees, by name."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.emptied = 0

    def is_available(self) -> bool:
        return bool(self.names)

    def device_count(self) -> int:
        return len(self.names)

    def get_device_name(self, index: int = 0) -> str:
        return self.names[index]

    def empty_cache(self) -> None:
        self.emptied += 1


class FakeTorchNPU:
    """The ``torch_npu`` import: a meta-path finder whose module registers the NPU when executed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
        self._monkeypatch = monkeypatch
        self.npu = FakeNPU(names)
        self.imports = 0
        #: Every device string naming an NPU that torch was asked to move something to.
        self.moves: list[str] = []

    # importlib's finder/loader protocol
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name == "torch_npu" else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        import torch

        self.imports += 1
        module.__version__ = TORCH_NPU_VERSION  # type: ignore[attr-defined]
        module.npu = self.npu  # type: ignore[attr-defined]
        mp = self._monkeypatch
        mp.setattr(torch, "npu", self.npu, raising=False)
        module_to, tensor_to = torch.nn.Module.to, torch.Tensor.to

        def module_to_(self_: Any, *args: Any, **kwargs: Any) -> Any:
            return module_to(self_, *self._args(args), **self._kwargs(kwargs))

        def tensor_to_(self_: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor_to(self_, *self._args(args), **self._kwargs(kwargs))

        mp.setattr(torch.nn.Module, "to", module_to_)
        mp.setattr(torch.Tensor, "to", tensor_to_)

    def _device(self, value: Any) -> Any:
        if isinstance(value, str) and value.partition(":")[0] == "npu":
            index = int(value.partition(":")[2] or 0)
            if index >= self.npu.device_count():
                raise RuntimeError(f"torch_npu: invalid device {value!r}: {self.npu.device_count()} NPU(s) visible")
            self.moves.append(value)
            return "cpu"
        return value

    def _args(self, args: tuple[Any, ...]) -> list[Any]:
        return [self._device(a) for a in args]

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {k: self._device(v) if k == "device" else v for k, v in kwargs.items()}


def _remove_on_undo(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``sys.modules[name]`` absent now and again after the test, whatever the test imports.

    (``setitem`` records the entry as absent, so its undo deletes it; ``delitem`` then removes it
    for the test and its undo, which runs first, puts the placeholder back.)
    """
    monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, name)


def _dist_info(root: Path, name: str, version: str, entry_points: str = "") -> None:
    folder = root / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    if entry_points:
        (folder / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def _settle_transformers() -> None:
    """Let transformers decide that there is no torch_npu, before the fake exists.

    transformers asks once per process whether torch_npu is installed (``is_torch_npu_available``
    is cached, some modules keep the answer at import) and then imports NPU kernels from it. The
    fake simulates the NPU for this library, not for transformers: transformers keeps its CPU
    code, and no answer cached during one test changes what later tests see.
    """
    try:
        import transformers.integrations.sdpa_attention  # noqa: F401
        import transformers.modeling_utils  # noqa: F401
        import transformers.models.qwen3.modeling_qwen3  # noqa: F401
        from transformers.utils.import_utils import is_torch_npu_available
    except ImportError:
        return
    assert not is_torch_npu_available(), "a real torch_npu is installed: these fakes would not be used"


def hide_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``torch.cuda.is_available()`` answer False (an Ascend or CPU-only host) until undo."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def install_torch_npu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, names: list[str] | None = None) -> FakeTorchNPU:
    """Make ``import torch_npu`` load the fake; ``names``: the NPUs it sees (none: ``[]``).

    The process then looks like one on an Ascend host, which has no CUDA: on a CUDA machine (the
    GPU test tier) ``torch.cuda.is_available()`` answers False meanwhile.
    """
    _settle_transformers()
    hide_cuda(monkeypatch)
    fake = FakeTorchNPU(monkeypatch, ["Ascend910B3"] if names is None else names)
    _remove_on_undo(monkeypatch, "torch_npu")
    monkeypatch.setattr(sys, "meta_path", [fake, *sys.meta_path])
    _dist_info(tmp_path / "npu-site", "torch-npu", TORCH_NPU_VERSION)
    monkeypatch.syspath_prepend(str(tmp_path / "npu-site"))
    return fake


# -- vLLM with the vLLM-Ascend platform ------------------------------------------------------------
class NPUPlatform:
    """What ``vllm.platforms.current_platform`` is once the ``vllm_ascend`` plugin is active."""

    device_name = "npu"
    device_type = "npu"
    dispatch_key = "PrivateUse1"

    @classmethod
    def is_out_of_tree(cls) -> bool:
        return True


NPUPlatform.__module__ = "vllm_ascend.platform"


@dataclasses.dataclass
class AsyncEngineArgs:
    """The fields of vLLM's ``AsyncEngineArgs`` that the engine may pass."""

    model: str
    runner: str = "generate"
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float = 0.9
    hf_overrides: dict[str, Any] | None = None
    revision: str | None = None
    disable_log_stats: bool = False


class PoolingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class UsageContext:
    LLM_CLASS = "LLM_CLASS"


class FakeAsyncLLM:
    """An ``AsyncLLM`` on the fake NPU: remembers how it was started; a sequence's logit is
    ``len(ids) / 100``."""

    started: list[FakeAsyncLLM] = []

    def __init__(self, engine_args: AsyncEngineArgs, usage_context: Any) -> None:
        self.engine_args = engine_args
        self.usage_context = usage_context
        length = engine_args.max_model_len or 40960
        self.model_config = types.SimpleNamespace(max_model_len=length, dtype="torch.bfloat16")
        self.closed = False

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs, usage_context: Any = None) -> FakeAsyncLLM:
        llm = cls(engine_args, usage_context)
        cls.started.append(llm)
        return llm

    async def encode(self, prompt: dict[str, list[int]], params: PoolingParams, request_id: str) -> Any:
        ids = prompt["prompt_token_ids"]
        yield types.SimpleNamespace(outputs=types.SimpleNamespace(data=[len(ids) / 100]))

    def shutdown(self) -> None:
        self.closed = True


def _module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def install_vllm_ascend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeAsyncLLM]:
    """Replace ``vllm`` (installed or not) by the vLLM-Ascend image's, on the fake NPU, for this test.

    Returns the fake ``AsyncLLM`` class; ``FakeAsyncLLM.started`` lists the instances started.
    """
    from qwen3_rerank.engines.vllm_engine import _adapter

    monkeypatch.setattr(FakeAsyncLLM, "started", [])
    _module(monkeypatch, "vllm", __version__=VLLM_VERSION, AsyncEngineArgs=AsyncEngineArgs, PoolingParams=PoolingParams)
    _module(monkeypatch, "vllm.platforms", current_platform=NPUPlatform())
    _module(monkeypatch, "vllm.v1")
    _module(monkeypatch, "vllm.v1.engine")
    _module(monkeypatch, "vllm.v1.engine.async_llm", AsyncLLM=FakeAsyncLLM)
    _module(monkeypatch, "vllm.inputs", tokens_input=lambda ids: {"prompt_token_ids": list(ids)})
    _module(monkeypatch, "vllm.usage")
    _module(monkeypatch, "vllm.usage.usage_lib", UsageContext=UsageContext)
    # The adapter is resolved once per process: resolve it again against this vllm.
    monkeypatch.setattr(_adapter, "_adapter", None)
    site = tmp_path / "vllm-ascend-site"
    _dist_info(site, "vllm", VLLM_VERSION)
    _dist_info(site, "vllm-ascend", VLLM_ASCEND_VERSION, "[vllm.platform_plugins]\nascend = vllm_ascend:register\n")
    monkeypatch.syspath_prepend(str(site))
    return FakeAsyncLLM
