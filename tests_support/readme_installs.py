"""Check that each ``pip install`` line of an integration README installs what the snippets after it import.

A Python block is checked against the closest ``pip install`` line above it: every module it
imports must come from a distribution that line names, or from their requirements (read from the
package's own ``pyproject.toml`` and from the installed metadata of the others). An argument may
also be a project folder (``.``, ``integrations/langchain``: relative to the checkout's root, where
the README says to run the command) or a wheel file (``dist/qwen3_rerank-0.1.0-py3-none-any.whl``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

_FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)
ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(name: str, own: dict[str, list[str]]) -> list[str]:
    if name in own:
        return own[name]
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    reqs = [Requirement(r) for r in requires]
    return [_canonical(r.name) for r in reqs if r.marker is None or "extra" not in str(r.marker)]


def _closure(names: set[str], own: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _requirements(name, own)
    return seen


def _distribution(word: str) -> str:
    """The distribution one ``pip install`` argument names: a requirement, a wheel file or a project folder."""
    path = word.partition("[")[0]
    if path.endswith(".whl"):
        return _canonical(Path(path).name.split("-")[0])
    if path.startswith((".", "/")) or "/" in path:
        pyproject = ROOT / path / "pyproject.toml"
        return _canonical(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"])
    return _canonical(Requirement(word).name)


def _installed_names(block: str) -> set[str] | None:
    for line in block.splitlines():
        words = shlex.split(line.split("#")[0]) if "pip install" in line else []
        if words:
            names = words[words.index("install") + 1 :]
            return {_distribution(w) for w in names if not w.startswith("-")}
    return None


def _imports(code: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def missing_installs(readme: Path, pyproject: Path, own_module: str) -> list[str]:
    """What the README's snippets import that the install line above them does not install."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    own_name = _canonical(project["name"])
    own = {own_name: [_canonical(Requirement(r).name) for r in project["dependencies"]]}
    providers = importlib.metadata.packages_distributions()
    problems: list[str] = []
    installed: set[str] | None = None
    for lang, code in _FENCE.findall(readme.read_text(encoding="utf-8")):
        if lang == "bash":
            installed = _installed_names(code) or installed
            continue
        if lang != "python":
            continue
        if installed is None:
            problems.append(f"a python block comes before any pip install line: {code[:60]!r}")
            continue
        closure = _closure(installed, own)
        for module in sorted(_imports(code)):
            if module == own_module or module.startswith(own_module + "."):
                dists = {own_name}
            else:
                dists = {_canonical(d) for d in providers.get(module.split(".")[0], [])}
            if not dists & closure:
                source = sorted(dists) or "nothing installed"
                problems.append(f"{module} (from {source}) is not installed by {sorted(installed)}")
    return problems
