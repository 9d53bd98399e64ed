"""Print a compact table of a results.jsonl (last measurement of each shape/workload/engine)."""

from __future__ import annotations

import json
import sys
from collections import OrderedDict


def load(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def main(path: str) -> None:
    rows = load(path)
    last: OrderedDict = OrderedDict()
    for r in rows:
        if "pairs_per_s" in r or "ratio" in r or "note" in r or r.get("kind") == "startup":
            key = (r.get("suite"), r.get("shape"), r.get("workload"), r.get("engine"), r.get("kind"), r.get("vs"))
            last[key] = r
    for (suite, shape, wl, eng, kind, _), r in last.items():
        if kind == "startup":
            print(f"{suite!s:12} {shape!s:5} startup {eng!s:8} {r['seconds']} s")
        elif kind == "ratio":
            print(
                f"{suite:12} {shape:5} {wl:16} {eng:26} ratio={r['ratio']} vs {r['vs']} "
                f"mem_ratio={r.get('mem_ratio')} diff={r.get('max_score_diff')}"
            )
        elif "note" in r:
            print(f"{suite!s:12} {shape!s:5} {wl!s:16} {eng!s:26} {r['note']}")
        else:
            extra = {k: r[k] for k in ("max_score_diff_vs_LLM.score",) if k in r}
            print(
                f"{suite!s:12} {shape!s:5} {wl!s:16} {eng!s:26} {r.get('pairs_per_s')!s:>9} pairs/s "
                f"{r.get('tokens_per_s')!s:>9} tok/s {r.get('mean_tokens')!s:>7} tok/pair "
                f"peak={r.get('peak_frac')} mem={r.get('peak_mem_gib')} seconds={r.get('seconds')} {extra}"
            )


if __name__ == "__main__":
    main(sys.argv[1])
