"""Run the README's quickstarts against the installed wheels (what `make dist-check` runs).

    .venv-dist/bin/python tools/dist_check.py README.md

Run with the interpreter of a fresh venv into which the wheels of ``dist/`` were installed
(no editable install, no checkout on ``sys.path``). Every ```` ```python ```` block of the README
that needs no hardware and no server (no ``# needs:`` line) runs with the tiny offline test model
standing in for ``Qwen/Qwen3-Reranker-0.6B``, in a scratch directory, so a module missing from a
wheel or a dependency missing from its metadata fails here rather than on a user's machine.
The block rules are those of ``tests/test_readme.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REAL_MODEL = "Qwen/Qwen3-Reranker-0.6B"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NEEDS = re.compile(r"^#\s*needs:", re.MULTILINE)
# The four packages, each imported from its wheel (the Haystack one has no README quickstart: imported only).
MODULES = ("qwen3_rerank", "langchain_qwen3_rerank", "llama_index.postprocessor.qwen3_rerank", "haystack_qwen3_rerank")


def _leading_comments(code: str) -> str:
    lines = []
    for line in code.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def _check_installed_from_wheels() -> None:
    """Each module must come from this venv's site-packages, not from a checkout."""
    import importlib

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in MODULES:
        module = importlib.import_module(name)
        where = Path(module.__file__ or "").resolve()
        if site not in where.parents:
            raise SystemExit(f"dist-check: {name} was imported from {where}, not from the wheel in {site}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    readme = Path(argv[1]).resolve()
    _check_installed_from_wheels()
    from qwen3_rerank.testing import cached_test_model

    model = str(cached_test_model())
    text = readme.read_text(encoding="utf-8")
    blocks = [
        (text.count("\n", 0, m.start()) + 2, m.group(1))
        for m in _FENCE.finditer(text)
        if not _NEEDS.search(_leading_comments(m.group(1)))
    ]
    if len(blocks) < 3:
        raise SystemExit(f"dist-check: expected the three quickstarts in {readme}, found {len(blocks)} blocks")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for line, code in blocks:
        started = time.perf_counter()
        out = io.StringIO()
        with tempfile.TemporaryDirectory() as scratch:
            here = os.getcwd()
            os.chdir(scratch)  # contextlib.chdir needs Python 3.11; the package supports 3.10
            try:
                with contextlib.redirect_stdout(out):
                    namespace = {"__name__": "__main__", "__file__": str(Path(scratch) / "quickstart.py")}
                    exec(compile(code.replace(REAL_MODEL, model), f"{readme.name}:{line}", "exec"), namespace)  # noqa: S102
            finally:
                os.chdir(here)
        if "print(" in code and not out.getvalue().strip():
            raise SystemExit(f"dist-check: {readme.name}:{line} printed nothing")
        print(f"dist-check: {readme.name}:{line} ran from the wheels in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
