"""The ``vllm serve`` command per vLLM version (``qwen3_rerank._vllm_command``): each boundary, and the real parser."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from qwen3_rerank._vllm_command import display_command, serve_command, serve_hf_overrides, vllm_release
from qwen3_rerank.engines.remote import _protocol
from qwen3_rerank.engines.vllm_engine import ORIGINAL_RERANKER_OVERRIDES
from tests_support.vllm_server import SEED_HF_OVERRIDES

MODEL = "Qwen/Qwen3-Reranker-8B"
TASK = ["--task", "score"]
RUNNER = ["--runner", "pooling"]


@pytest.mark.parametrize(
    ("version", "flags"),
    [
        ("0.9.2rc1", TASK),
        ("0.9.2", TASK),  # the first vLLM that reads is_original_qwen3_reranker
        ("0.9.2.post2", TASK),
        ("0.10.0", TASK),  # the last without --runner
        ("0.10.1rc1", TASK),  # a pre-release of 0.10.1 may lack --runner; --task still works there
        ("0.10.1", RUNNER),  # --runner appears
        ("0.10.1.1", RUNNER),
        ("0.11.0", RUNNER),
        ("0.12.0", RUNNER),  # the last with --task (deprecated)
        ("0.13.0rc1", RUNNER),
        ("0.13.0", RUNNER),  # --task is gone
        ("0.18.0", RUNNER),
        ("0.23.0", RUNNER),  # vLLM-Ascend 0.23
        ("0.26.0+cu130", RUNNER),
        ("0.32.0", RUNNER),
        ("v1.2.3", RUNNER),
    ],
)
def test_the_flag_for_each_version(version, flags):
    argv = serve_command(MODEL, vllm_version=version)
    assert argv[:3] == ["vllm", "serve", MODEL]
    assert argv[3:5] == flags
    assert argv[5] == "--hf-overrides" and json.loads(argv[6]) == ORIGINAL_RERANKER_OVERRIDES
    assert len(argv) == 7


@pytest.mark.parametrize("version", ["0.9.1", "0.9.1.post2", "0.8.5"])
def test_a_vllm_older_than_0_9_2_is_refused_with_the_fix(version):
    with pytest.raises(ValueError, match=r"cannot serve the original Qwen3-Reranker.*vLLM 0\.9\.2 or newer"):
        serve_command(MODEL, vllm_version=version)


@pytest.mark.parametrize("version", ["", "latest", "0", "x.1.2"])
def test_a_string_that_is_no_version_is_refused(version):
    with pytest.raises(ValueError, match="not a vLLM version"):
        serve_command(MODEL, vllm_version=version)


def test_release_parsing():
    assert vllm_release("0.10.1rc1") == ((0, 10, 1), True)
    assert vllm_release("0.13.0.dev5+gabc123") == ((0, 13, 0), True)
    assert vllm_release("0.9.2.post2") == ((0, 9, 2), False)
    assert vllm_release("0.26.0+cu130") == ((0, 26, 0), False)
    assert vllm_release("0.11") == ((0, 11, 0), False)


def test_the_display_is_one_pasteable_shell_line():
    argv = serve_command("/models/my reranker", vllm_version="0.32.0")
    line = display_command(argv)
    assert "\n" not in line and shlex.split(line) == argv
    assert line.startswith("vllm serve '/models/my reranker' --runner pooling --hf-overrides '{")


def test_the_overrides_are_the_ones_the_engines_and_the_docs_use():
    assert serve_hf_overrides() == ORIGINAL_RERANKER_OVERRIDES == SEED_HF_OVERRIDES
    assert serve_hf_overrides() is not ORIGINAL_RERANKER_OVERRIDES  # a copy: callers may change theirs
    hint = re.search(r"--hf-overrides '(\{.*\})'", _protocol.HF_OVERRIDES_HINT)
    assert hint is not None and json.loads(hint.group(1)) == ORIGINAL_RERANKER_OVERRIDES


@pytest.mark.vllm
def test_the_command_for_the_installed_vllm_passes_its_own_parser():
    vllm = pytest.importorskip("vllm")
    from tests_support.vllm_cli import VLLMServeUsageError, parse_vllm_serve

    argv = serve_command(MODEL, vllm_version=vllm.__version__)
    args = parse_vllm_serve(argv)
    assert args.model_tag == MODEL
    assert args.hf_overrides == ORIGINAL_RERANKER_OVERRIDES
    if vllm_release(vllm.__version__)[0] >= (0, 10, 1):
        assert args.runner == "pooling" and args.convert == "auto"  # no --convert needed
    # The other side of the boundary fails where the rule says it does (vLLM >= 0.13: no --task).
    task_argv = [*argv[:3], *TASK, *argv[5:]]
    if vllm_release(vllm.__version__)[0] >= (0, 13, 0):
        with pytest.raises(VLLMServeUsageError, match="unrecognized arguments: --task"):
            parse_vllm_serve(task_argv)
    with pytest.raises(VLLMServeUsageError, match="unrecognized arguments: --no-such-flag"):
        parse_vllm_serve([*argv, "--no-such-flag"])
