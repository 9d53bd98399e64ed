"""The layering, pinned by reading the source with ``ast`` (nothing is imported: fast, no heavy deps).

- The core (every module of ``qwen3_rerank`` but the engines, ``testing``, ``reference`` and the
  CLI) never imports an engine's dependency (torch, transformers, vllm, httpx) at module level.
- The engines do not import one another: ``transformers_engine``, ``vllm_engine/`` and ``remote/``
  share code only through ``engines/_base.py`` and the core (``qwen3_rerank._checkpoint``, ...).
- The integrations use only the public API: ``qwen3_rerank``, ``qwen3_rerank.settings`` and
  ``qwen3_rerank.engines``, and only the names in their ``__all__``.
- No module of the four packages is longer than 500 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# Package root (what sys.path holds) and the package's directory, for the four packages.
PACKAGES = {
    "qwen3_rerank": SRC,
    "langchain_qwen3_rerank": ROOT / "integrations" / "langchain",
    "llama_index.postprocessor.qwen3_rerank": ROOT / "integrations" / "llama-index",
    "haystack_qwen3_rerank": ROOT / "integrations" / "haystack",
}
INTEGRATIONS = ("langchain_qwen3_rerank", "llama_index.postprocessor.qwen3_rerank", "haystack_qwen3_rerank")

HEAVY = ("torch", "torch_npu", "transformers", "vllm", "httpx", "httpcore", "ray", "pyarrow", "pandas")
NOT_CORE = ("qwen3_rerank.testing", "qwen3_rerank.diagnosis.reference", "qwen3_rerank.cli")
ENGINES = {
    "transformers": "qwen3_rerank.engines.transformers_engine",
    "vllm": "qwen3_rerank.engines.vllm_engine",
    "remote": "qwen3_rerank.engines.remote",
}
# The lazy re-exports of qwen3_rerank.engines: importing one loads that engine's module.
ENGINE_CLASSES = {"TransformersEngine": "transformers", "VLLMEngine": "vllm", "RemoteEngine": "remote"}
PUBLIC_MODULES = ("qwen3_rerank", "qwen3_rerank.settings", "qwen3_rerank.engines")
MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    module: str
    """The absolute module of the statement (``m`` for ``import m`` and ``from m import a``)."""
    names: tuple[str, ...]
    """What ``from m import ...`` takes from it (empty for ``import m``)."""
    line: int
    module_level: bool
    """Run by importing the module: not inside a function, not under ``if TYPE_CHECKING``."""
    type_only: bool = False
    """Under ``if TYPE_CHECKING``: never run."""

    def targets(self) -> list[str]:
        """The module and ``module.name`` for each name (a name may be a submodule)."""
        return [self.module, *(f"{self.module}.{n}" for n in self.names)]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package``: dotted name -> file."""
    base = PACKAGES[package]
    out = {}
    for path in sorted((base / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> list[Import]:
    """Every import statement of module ``name``, relative ones made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool, type_only: bool = False) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, (), node.lineno, module_level, type_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append(Import(module, tuple(a.name for a in node.names), node.lineno, module_level, type_only))
        elif isinstance(node, ast.If) and _type_checking(node.test):
            for stmt in node.body:
                visit(stmt, False, True)
            for stmt in node.orelse:
                visit(stmt, module_level, type_only)
            return
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_only)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), True)
    return found


def _dunder_all(module: str) -> set[str]:
    """The literal ``__all__`` of a ``qwen3_rerank`` module, read from its source."""
    tree = ast.parse(_modules("qwen3_rerank")[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no literal __all__")


def _engine_of(module: str) -> str | None:
    return next((engine for engine, prefix in ENGINES.items() if _within(module, prefix)), None)


def _engines_reached(imp: Import) -> set[str]:
    reached = {e for t in imp.targets() if (e := _engine_of(t)) is not None}
    if imp.module in ("qwen3_rerank", "qwen3_rerank.engines"):
        reached |= {ENGINE_CLASSES[n] for n in imp.names if n in ENGINE_CLASSES}
    return reached


CORE = {
    m: p
    for m, p in _modules("qwen3_rerank").items()
    if _engine_of(m) is None and not any(_within(m, n) for n in NOT_CORE)
}


def test_the_scanner_sees_nested_relative_and_type_checking_imports():
    # Guards the checks below against passing because nothing was found.
    modules = _modules("qwen3_rerank")
    engine = _imports("qwen3_rerank.engines.transformers_engine", modules["qwen3_rerank.engines.transformers_engine"])
    assert any(i.module == "torch" and not i.module_level for i in engine)
    assert any(i.module == "qwen3_rerank.engines._base" and i.module_level for i in engine)
    base = _imports("qwen3_rerank.engines._base", modules["qwen3_rerank.engines._base"])
    assert any(i.module == "qwen3_rerank._tokenizer" and not i.module_level for i in base)  # under TYPE_CHECKING
    remote = _imports("qwen3_rerank.engines.remote._engine", modules["qwen3_rerank.engines.remote._engine"])
    assert any(i.module == "qwen3_rerank.engines.remote" and i.names == ("_protocol",) for i in remote)  # from . import
    assert {"qwen3_rerank._reranker", "qwen3_rerank.engines._base", "qwen3_rerank.settings"} <= set(CORE)
    assert not {"qwen3_rerank.testing", "qwen3_rerank.cli._main", "qwen3_rerank.engines.remote"} & set(CORE)


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_no_engine_dependency_at_module_level(module):
    heavy = [
        f"line {i.line}: {i.module}"
        for i in _imports(module, CORE[module])
        if i.module_level and any(_within(i.module, h) for h in HEAVY)
    ]
    assert not heavy, f"{module} imports an engine's dependency on import (import it where it is used): {heavy}"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engines_do_not_import_one_another(engine):
    crossing = []
    for module, path in _modules("qwen3_rerank").items():
        if _engine_of(module) != engine:
            continue
        for imp in _imports(module, path):
            others = _engines_reached(imp) - {engine}
            if others:
                crossing.append(f"{module}, line {imp.line}: {imp.module} {list(imp.names)} -> {sorted(others)}")
    assert not crossing, f"the {engine} engine imports another engine (share code via engines/_base.py): {crossing}"


@pytest.mark.parametrize("package", INTEGRATIONS)
def test_integrations_use_only_the_public_api(package):
    public = {m: _dunder_all(m) for m in PUBLIC_MODULES}
    private = []
    for module, path in _modules(package).items():
        aliases: dict[str, str] = {}  # local name -> qwen3_rerank module it is bound to
        for imp in _imports(module, path):
            if not _within(imp.module, "qwen3_rerank"):
                continue
            where = f"{module}, line {imp.line}"
            if imp.module not in public:
                private.append(f"{where}: imports {imp.module} (use {', '.join(PUBLIC_MODULES)})")
                continue
            for name in imp.names:
                if f"{imp.module}.{name}" in public:
                    continue  # a public module (`from qwen3_rerank import settings`)
                if name not in public[imp.module]:
                    private.append(f"{where}: {imp.module}.{name} is not in its __all__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name in public})
            elif isinstance(node, ast.ImportFrom) and node.module in public and not node.level:
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = aliases.get(node.value.id)
                if target in public and node.attr not in public[target] and not node.attr.startswith("__"):
                    private.append(f"{module}, line {node.lineno}: {target}.{node.attr} is not in its __all__")
    assert not private, f"{package} reaches past the public API: {private}"


def test_only_the_ray_package_imports_ray():
    outside = [
        f"{module}, line {i.line}"
        for module, path in _modules("qwen3_rerank").items()
        if not _within(module, "qwen3_rerank.ray")
        for i in _imports(module, path)
        if _within(i.module, "ray")
    ]
    assert not outside, f"Ray is imported outside qwen3_rerank.ray (keep it behind the [ray] extra): {outside}"


def test_no_module_is_longer_than_500_lines():
    too_long = {}
    for package in PACKAGES:
        for module, path in _modules(package).items():
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                too_long[module] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concept): {too_long}"


def _module_graph() -> dict[str, set[str]]:
    """Imports between the modules of ``qwen3_rerank``: at module level and inside functions (a
    lazy import is still a dependency); not the ``if TYPE_CHECKING`` ones, which never run."""
    modules = _modules("qwen3_rerank")
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for imp in _imports(module, path):
            if imp.type_only:
                continue
            # `from pkg import sub` imports the submodule; `from pkg import name` imports the package.
            targets = [t for t in imp.targets()[1:] if t in modules] or [imp.module]
            graph[module] |= {t for t in targets if t in modules and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _module_graph()
    # A package's __init__ importing its submodules is the normal direction; a submodule importing
    # back from its own package's __init__ would close a cycle, and is reported.
    assert sum(len(v) for v in graph.values()) > 50  # the scanner sees the imports
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


@pytest.mark.parametrize("upper", ["qwen3_rerank.settings", "qwen3_rerank.cli", "qwen3_rerank.server",
                                   "qwen3_rerank.ray", "qwen3_rerank.batch", *INTEGRATIONS])  # fmt: skip
def test_engines_import_nothing_above_them(upper):
    reaching = []
    for module, path in _modules("qwen3_rerank").items():
        if not _within(module, "qwen3_rerank.engines"):
            continue
        for imp in _imports(module, path):  # at any level: inside functions too
            if any(_within(t, upper) for t in imp.targets()):
                reaching.append(f"{module}, line {imp.line}: {imp.module}")
    assert not reaching, f"the engines reach up into {upper}: {reaching}"
