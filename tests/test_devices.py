"""Devices the host cannot use: a torch_npu that fails to import, ``cuda`` on a CPU-only torch (issue 25, 13 and 21)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from typing import Any

import pytest

from qwen3_rerank import ConfigurationError
from tests.fake_ascend import _remove_on_undo, _settle_transformers, hide_cuda
from tests.test_cli import _offline, assert_one_line_error, run

__all__ = ["_offline"]  # an autouse fixture, used by name


class _BrokenTorchNPU(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A torch_npu that is installed but raises on import, as one without its CANN libraries does."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        return importlib.machinery.ModuleSpec(name, self) if name == "torch_npu" else None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        raise self.error


@pytest.fixture(params=[OSError("libhccl.so: cannot open shared object file"), RuntimeError("torch version mismatch")])
def broken_torch_npu(request, monkeypatch) -> BaseException:
    _settle_transformers()
    hide_cuda(monkeypatch)  # an Ascend host has no CUDA: the default device is decided by torch_npu
    _remove_on_undo(monkeypatch, "torch_npu")
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchNPU(request.param), *sys.meta_path])
    error: BaseException = request.param
    return error


def test_a_broken_torch_npu_falls_back_to_the_cpu_with_a_warning(broken_torch_npu, caplog, tiny_model):
    from qwen3_rerank import Reranker
    from qwen3_rerank._devices import auto_device

    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        assert auto_device() == "cpu"  # raised the OSError / RuntimeError before
        reranker = Reranker("transformers", model=str(tiny_model))
    try:
        assert reranker.engine.device == "cpu"  # type: ignore[attr-defined]
        assert reranker.rerank("q", ["a", "b"])[0].score > 0
    finally:
        reranker.close()
    warning = next(r.getMessage() for r in caplog.records if "torch_npu" in r.getMessage())
    assert type(broken_torch_npu).__name__ in warning and str(broken_torch_npu) in warning
    assert "CANN" in warning


def test_asking_for_the_npu_with_a_broken_torch_npu_says_why(broken_torch_npu):
    from qwen3_rerank._devices import prepare_device

    with pytest.raises(ConfigurationError, match="torch_npu cannot be imported") as info:
        prepare_device("npu:0")
    assert str(broken_torch_npu) in str(info.value)


def test_cuda_on_a_cpu_only_torch_fails_before_the_model_load(monkeypatch, tmp_path):
    from qwen3_rerank._devices import prepare_device

    hide_cuda(monkeypatch)
    with pytest.raises(ConfigurationError, match=r"torch.cuda.is_available\(\) is False") as info:
        prepare_device("cuda")
    assert "device='cpu'" in str(info.value)
    # The engine refuses before reading any weights: a directory that holds none is never opened.
    from qwen3_rerank.engines import TransformersEngine
    from qwen3_rerank.testing import cached_test_model

    calls: list[str] = []
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append("load") or real(*a, **k)
    )
    with pytest.raises(ConfigurationError, match="CPU-only|sees no CUDA"):
        TransformersEngine(str(cached_test_model()), device="cuda:0")
    assert calls == []


@pytest.mark.parametrize("command", ["rerank", "check"])
def test_cli_device_cuda_on_a_cpu_only_torch_is_a_usage_error(command, capsys, monkeypatch, tiny_model):
    hide_cuda(monkeypatch)
    if command == "rerank":
        argv = ["rerank", "q", "--docs", "-", "-m", tiny_model, "--device", "cuda"]
    else:
        argv = ["check", "-m", tiny_model, "--reference-device", "cuda:0"]
    code, _, err = run(argv, capsys, stdin="", monkeypatch=monkeypatch)  # stdin not read: validation comes first
    assert_one_line_error(code, err, "torch.cuda.is_available() is False", "device='cpu'", expected_code=2)
