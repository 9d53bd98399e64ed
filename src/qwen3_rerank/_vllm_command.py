"""The ``vllm serve`` command that serves an original Qwen3-Reranker, for a given vLLM version.

One rule, used by ``qwen3-rerank info`` and checked against the README by its tests. Read from
vLLM's argument parser (``vllm/engine/arg_utils.py``) in each release:

* 0.9.2 - 0.10.0: ``--task score``; there is no ``--runner``. (0.9.2 is also the first release
  that reads ``is_original_qwen3_reranker``; 0.9.1 cannot serve the original checkpoint.)
* 0.10.1: ``--runner`` and ``--convert`` appear (``model_group.add_argument("--runner", ...)``);
  ``--task`` stays until 0.12, deprecated (``add_argument("--task", ..., deprecated=True)``).
* 0.13.0: ``--task`` is gone: ``vllm serve --task score`` fails with
  ``unrecognized arguments: --task``.

So ``--runner pooling`` from 0.10.1 on (it works on both sides of 0.13), ``--task score`` before.
No ``--convert`` is needed: the overrides name ``Qwen3ForSequenceClassification``, which vLLM
runs as a pooling model as it is. For ``--runner`` a pre-release (``0.10.1rc1``) counts as older
than its release, so an early build of 0.10.1 gets ``--task score``, which it still accepts.

Example:
    >>> from qwen3_rerank._vllm_command import serve_command, display_command
    >>> display_command(serve_command("Qwen/Qwen3-Reranker-0.6B", vllm_version="0.32.0"))[:57]
    'vllm serve Qwen/Qwen3-Reranker-0.6B --runner pooling --hf'
    >>> serve_command("Qwen/Qwen3-Reranker-0.6B", vllm_version="0.10.0")[3:5]
    ['--task', 'score']
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence

__all__ = [
    "FIRST_VLLM",
    "RUNNER_SINCE",
    "TASK_REMOVED_IN",
    "display_command",
    "serve_command",
    "serve_hf_overrides",
    "vllm_release",
]

FIRST_VLLM = (0, 9, 2)
"""The first vLLM that serves the original checkpoint (it reads ``is_original_qwen3_reranker``)."""
RUNNER_SINCE = (0, 10, 1)
"""The first vLLM with ``--runner``."""
TASK_REMOVED_IN = (0, 13, 0)
"""The first vLLM without ``--task``."""

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*(.*)$")
_PRE_RELEASE = re.compile(r"^[.\-_]?(a|b|c|rc|alpha|beta|pre|preview|dev)\d*", re.IGNORECASE)


def vllm_release(version: str) -> tuple[tuple[int, int, int], bool]:
    """``"0.10.1rc1"`` -> ``((0, 10, 1), True)``: the release and whether this is a pre-release.

    A local part (``+cpu``, ``+cu130``) and ``.postN`` do not matter.

    Raises:
        ValueError: the string is not a version.
    """
    m = _VERSION.match(version)
    if m is None:
        raise ValueError(f"not a vLLM version: {version!r} (expected something like '0.32.0')")
    release = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    rest = m.group(4).split("+", 1)[0]
    return release, bool(_PRE_RELEASE.match(rest))


def _older_than(version: str, release: tuple[int, int, int]) -> bool:
    parsed, pre = vllm_release(version)
    return parsed < release or (parsed == release and pre)


def serve_hf_overrides() -> dict[str, object]:
    """The ``--hf-overrides`` that turn the original checkpoint into vLLM's yes/no classifier.

    The same dict :class:`~qwen3_rerank.engines.VLLMEngine` passes (one definition, commented
    there), and the one the vLLM-Ascend tutorial gives.
    """
    from .engines.vllm_engine._engine import ORIGINAL_RERANKER_OVERRIDES  # no vLLM import

    return dict(ORIGINAL_RERANKER_OVERRIDES)


def serve_command(model: str, *, vllm_version: str) -> list[str]:
    """The ``vllm serve`` argv that serves the original Qwen3-Reranker ``model`` on that vLLM.

    Args:
        model: Hub id or local path of an original (``Qwen3ForCausalLM``) checkpoint.
        vllm_version: The vLLM that will serve it, e.g. ``vllm.__version__``.

    Raises:
        ValueError: ``vllm_version`` is not a version, or older than 0.9.2 (that vLLM cannot
            serve the original checkpoint: upgrade it).
    """
    if vllm_release(vllm_version)[0] < FIRST_VLLM:  # a 0.9.2 pre-release is given the benefit of the doubt
        raise ValueError(
            f"vLLM {vllm_version} cannot serve the original Qwen3-Reranker (it does not read "
            "is_original_qwen3_reranker); use vLLM 0.9.2 or newer"
        )
    runner = ["--task", "score"] if _older_than(vllm_version, RUNNER_SINCE) else ["--runner", "pooling"]
    return ["vllm", "serve", str(model), *runner, "--hf-overrides", json.dumps(serve_hf_overrides())]


def display_command(argv: Sequence[str]) -> str:
    """A shell line for ``argv`` (quoted with :func:`shlex.join`), ready to paste."""
    return shlex.join(argv)
