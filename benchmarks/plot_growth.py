"""Draw how cost grows (the ``--sweep`` records of bench_transformers.py and bench_vllm.py).

    python benchmarks/plot_growth.py benchmarks/results/<run>.jsonl [more.jsonl ...] \\
        [--shape 0.6B] [--out benchmarks/growth.png]

One figure, three panels: pairs/s against documents per query (1 query, ~500-token documents;
log x), pairs/s against document tokens (1 query; log x, log y), and the embedded engine's peak
memory beyond its weights against documents per query. Only the records of the growth sweep
(workloads named ``growth-*``) are read; files in time order, a later record of the same engine
and point replaces an earlier one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from summarize import load

# (suite, engine label in the records) -> legend
ENGINES = {
    ("transformers", "engine-defaults"): "TransformersEngine (defaults)",
    ("vllm", "VLLMEngine+Reranker"): "VLLMEngine (defaults)",
    ("vllm", "vllm-LLM.score"): "vllm LLM.score (strings)",
}


def growth_records(paths: list[str], shape: str) -> dict[tuple[str, str, str, int], dict]:
    last: dict[tuple[str, str, str, int], dict] = {}
    for path in paths:
        for r in load(path):
            if (
                "pairs_per_s" in r
                and r.get("shape") == shape
                and str(r.get("workload", "")).startswith("growth-")
                and r.get("sweep") in ("docs", "tokens")
            ):
                last[(r["suite"], r["engine"], r["sweep"], r["x"])] = r
    return last


def machine_line(records: list[dict]) -> str:
    m = next((r["machine"] for r in records if r.get("machine")), {})
    where = m.get("gpu") or f"CPU, {m.get('cpus', '?')} cores"
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "transformers", "vllm") if k in m)
    return f"{where} ({versions})" if versions else where


def main(paths: list[str], out: str, shape: str) -> None:
    last = growth_records(paths, shape)
    if not last:
        raise SystemExit(f"no growth-sweep records for shape {shape!r} in {paths}")
    records = list(last.values())
    dtypes = sorted({str(r["dtype"]) for r in records if r.get("dtype")})
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(20, 6))
    for k, ((suite, engine), label) in enumerate(ENGINES.items()):
        for ax, sweep in ((left, "docs"), (middle, "tokens")):
            pts = sorted(
                (r.get("doc_tokens", r["x"]) if sweep == "tokens" else r["x"], r["pairs_per_s"])
                for (s, e, sw, _), r in last.items()
                if (s, e, sw) == (suite, engine, sweep)
            )
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", label=label)
            for x, y in pts:  # first engine's values above its points, the others' below
                off = (0, 6) if k == 0 else (0, -12)
                ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=off, ha="center", fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("documents per query (1 query, ~500-token documents)")
    left.set_ylabel("pairs/s")
    left.set_ylim(bottom=0)
    left.set_title("pairs/s vs documents per query")
    middle.set_xscale("log")
    middle.set_yscale("log")
    middle.set_xlabel("document tokens (measured mean; 1 query x 100 / 100 / 50 / 16 documents)")
    middle.set_ylabel("pairs/s (log)")
    middle.set_title("pairs/s vs document length")
    mem = sorted(
        (r["x"], r["peak_gib"], r.get("weights_gib"))
        for (s, e, sw, _), r in last.items()
        if (s, e, sw) == ("transformers", "engine-defaults", "docs") and r.get("peak_gib") is not None
    )
    if mem:
        right.plot([m[0] for m in mem], [m[1] for m in mem], marker="o", label="TransformersEngine (defaults)")
        for x, y, _ in mem:
            right.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        right.set_ylim(0, max(m[1] for m in mem) * 1.3)
        weights = mem[0][2]
        right.set_title(f"peak memory beyond the weights ({weights:.2f} GiB of weights)" if weights else "peak memory")
        right.legend(fontsize=8)
    else:
        right.text(
            0.5,
            0.5,
            "no CUDA memory records\n(peak_gib is measured on CUDA only)",
            ha="center",
            va="center",
            transform=right.transAxes,
        )
        right.set_title("peak memory beyond the weights")
    right.set_xscale("log")
    right.set_xlabel("documents per query (1 query, ~500-token documents)")
    right.set_ylabel("GiB: max_memory_allocated - weights")
    for ax in (left, middle):
        ax.legend(fontsize=8)
    fig.suptitle(
        f"How cost grows: Qwen3-Reranker-{shape} shape (random init, {'/'.join(dtypes) or '?'}), "
        f"{machine_line(records)}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out} from {len(records)} records")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", help="results files (jsonl), oldest first")
    ap.add_argument("--shape", default="0.6B")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "growth.png"))
    args = ap.parse_args()
    main(args.paths, args.out, args.shape)
