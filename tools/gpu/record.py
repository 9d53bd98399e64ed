"""Append GPU-tier summaries (tools/gpu/summary.py output) to the committed results files.

    python tools/gpu/record.py SUMMARY.json [SUMMARY.json ...] --note "what was run"

Each summary becomes one line of tools/gpu/results.jsonl (everything) and one row of the table
in tools/gpu/RESULTS.md (date, GPUs, versions, counts, duration).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "<!-- rows: tools/gpu/record.py appends below -->"


def row(s: dict, note: str) -> str:
    gpus = s.get("gpus") or ["?"]
    gpu = f"{len(gpus)} x {gpus[0]}" if gpus else "?"
    v = s.get("versions", {})
    failed = ", ".join(p["test"].rsplit("::", 1)[-1] for p in s.get("problems", []) if p["outcome"] != "skipped")
    return (
        f"| {s['date']} | {gpu} | {s['part']} | vLLM {v.get('vllm')}, torch {v.get('torch')}, "
        f"transformers {v.get('transformers')} | {s['passed']} | {s['failed']} | {s['skipped']} | "
        f"{s['seconds']} s | {note}{' — failed: ' + failed if failed else ''} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    results = HERE / "RESULTS.md"
    text = results.read_text()
    if MARK not in text:
        raise SystemExit(f"{results} has no {MARK!r} line")
    with (HERE / "results.jsonl").open("a") as jl:
        for path in a.summaries:
            s = json.loads(Path(path).read_text())
            s["note"] = a.note
            jl.write(json.dumps(s) + "\n")
            text = text.rstrip("\n") + "\n" + row(s, a.note) + "\n"
    results.write_text(text)


if __name__ == "__main__":
    main()
