"""Summarise one GPU-tier pytest run (junit XML) with the machine and versions, as one JSON object.

Run on the GPU machine by tools/gpu/tier.sh; tools/gpu/record.py appends the result to the
committed results files.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import subprocess
import xml.etree.ElementTree as ET


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        try:
            module = __import__(name)
        except ImportError:
            return None
        return getattr(module, "__version__", None)


def _gpus() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def summarise(junit: str, part: str, exit_code: int, seconds: int) -> dict[str, object]:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    problems = []
    for case in root.iter("testcase"):
        if not case.get("name"):
            continue  # the test a SIGINT interrupted (TIER_PART_SECONDS): not a result
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append((float(case.get("time", 0)), name))
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                problems.append({"test": name, "outcome": tag, "message": (node.get("message") or "")[:300]})
    cases.sort(reverse=True)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "part": part,
        "gpus": _gpus(),
        "python": platform.python_version(),
        "versions": {n: _version(n) for n in ("vllm", "torch", "transformers", "triton", "tokenizers")},
        "passed": totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"],
        "failed": totals["failures"] + totals["errors"],
        "skipped": totals["skipped"],
        "exit_code": exit_code,
        "interrupted": exit_code == 2,
        "seconds": seconds,
        "slowest": [{"test": n, "seconds": round(t, 1)} for t, n in cases[:25]],
        "problems": problems,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("junit")
    ap.add_argument("--part", required=True)
    ap.add_argument("--exit-code", type=int, required=True)
    ap.add_argument("--seconds", type=int, required=True)
    a = ap.parse_args()
    print(json.dumps(summarise(a.junit, a.part, a.exit_code, a.seconds)))
