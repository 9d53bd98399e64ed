"""Importing the package (and its integrations) must not load any heavy backend.

Each check runs in a fresh interpreter: the test process itself has torch/vllm loaded by other
tests. Only what gets imported is asserted, never how long it takes (timings live in
benchmarks/, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "vllm", "transformers", "httpx", "ray", "pyarrow")


def _loaded_after(module: str) -> list[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent namespace (llama_index not installed)
        return False


@pytest.mark.parametrize(
    "module",
    [
        "qwen3_rerank",
        "qwen3_rerank.engines",
        "qwen3_rerank.settings",
        "qwen3_rerank.diagnosis",
        "qwen3_rerank.cli",
        "qwen3_rerank.batch",
        "qwen3_rerank.ray",
        "langchain_qwen3_rerank",
        "llama_index.postprocessor.qwen3_rerank",
    ],
)
def test_import_loads_no_heavy_backend(module: str) -> None:
    if not _installed(module):
        pytest.skip(f"{module} is not installed")
    assert _loaded_after(module) == []


def test_the_haystack_integration_loads_nothing_haystack_does_not() -> None:
    # `import haystack` itself loads httpx, and torch where it is installed (haystack.utils.device,
    # Haystack 3.4); the integration must add no heavy backend of its own on top.
    if not _installed("haystack_qwen3_rerank"):
        pytest.skip("haystack_qwen3_rerank is not installed")
    assert _loaded_after("haystack_qwen3_rerank") == _loaded_after("haystack")
