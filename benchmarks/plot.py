"""Draw benchmarks/results.png from the GPU results (and the sweep) in benchmarks/results/.

python benchmarks/plot.py benchmarks/results/gpu-h100-*.jsonl benchmarks/results.png
(files in time order: a later measurement of the same engine/shape/workload replaces an earlier one)
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from summarize import load

ENGINES = [
    ("transformers", "official-card", "official model-card code (one batch per query, as on the card)"),
    ("transformers", "official-bs16", "official model-card code (chunks of 16)"),
    ("transformers", "engine-bs64-prefixoff", "TransformersEngine (bs 64, plain)"),
    ("transformers", "engine-bs64-prefixon", "TransformersEngine (bs 64, prefix reuse)"),
    ("transformers", "engine-bs64-prefixauto", "TransformersEngine (defaults: bs 64, prefix auto)"),
    ("vllm", "vllm-LLM.score", "vllm LLM.score (strings)"),
    ("vllm", "VLLMEngine+Reranker", "VLLMEngine via Reranker"),
    ("vllm", "VLLMEngine+Reranker replicas=2", "VLLMEngine(replicas=2) via Reranker"),
]
SHAPES = ("0.6B", "4B", "8B")
WORKLOADS = ["W1", "W2", "W3"]


def main(paths: list[str], out: str) -> None:
    rows = [r for path in paths for r in load(path) if "pairs_per_s" in r]
    last = {}
    for r in rows:  # files in time order: the latest measurement of each wins
        last[(r["suite"], r["shape"], r.get("workload"), r["engine"])] = r
    fig, axes = plt.subplots(2, 3, figsize=(21, 11))
    width = 0.8 / len(ENGINES)
    for ax, shape in zip(axes[0], SHAPES, strict=True):
        for k, (suite, eng, label) in enumerate(ENGINES):
            vals = [last.get((suite, shape, w, eng), {}).get("pairs_per_s", 0) for w in WORKLOADS]
            xs = [i + k * width for i in range(len(WORKLOADS))]
            ax.bar(xs, vals, width, label=label)
            for x, v in zip(xs, vals, strict=True):
                if v:
                    ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(WORKLOADS))])
        ax.set_xticklabels(["W1 8x100, ~335 tok", "W2 8x100, ~110 tok", "W3 4x50, ~2000 tok"])
        ax.set_yscale("log")
        top = max((r["pairs_per_s"] for k, r in last.items() if k[1] == shape and k[2] in WORKLOADS), default=1)
        ax.set_ylim(top=top * 12)  # room for the legend above the bars
        ax.set_ylabel("pairs/s (log)")
        ax.set_title(f"Qwen3-Reranker-{shape} shape (random init, bf16), one H100")
        ax.legend(fontsize=7)
    for ax, sweep, xlabel in (
        (axes[1][0], "docs", "documents per query (1 query, ~341 tok/pair)"),
        (axes[1][1], "tokens", "words per document (1 query x 100 docs)"),
    ):
        for suite, eng, label in [
            ("transformers", "engine-default-bs64-prefixauto", "TransformersEngine (defaults)"),
            ("vllm", "vllm-LLM.score", "vllm LLM.score (strings)"),
            ("vllm", "VLLMEngine+Reranker", "VLLMEngine via Reranker"),
        ]:
            pts = sorted(
                (r["x"], r["pairs_per_s"])
                for r in last.values()
                if r.get("sweep") == sweep
                and r["suite"] == suite
                and r["engine"] == eng
                and r["shape"] == "0.6B"
                and not str(r.get("workload")).startswith("growth-")  # plot_growth.py draws those
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs/s (log)")
        ax.set_title(f"0.6B scaling sweep, one H100 ({sweep})")
        ax.legend(fontsize=8)
    # VLLMEngine / LLM.score: both from the same run (file) only; one bar group per (run, shape).
    ax = axes[1][2]
    targets = {("0.6B", "W1"): 1.8, ("0.6B", "W2"): 2.2, ("8B", "W1"): 1.15, ("8B", "W2"): 1.3}
    groups = []
    for path in paths:
        run = {(r["shape"], r.get("workload"), r["engine"]): r["pairs_per_s"] for r in load(path) if "pairs_per_s" in r}
        name = path.rsplit("/", 1)[-1].removesuffix(".jsonl")
        for shape in SHAPES:
            vals = [
                run[(shape, w, "VLLMEngine+Reranker")] / run[(shape, w, "vllm-LLM.score")]
                if (shape, w, "VLLMEngine+Reranker") in run and (shape, w, "vllm-LLM.score") in run
                else 0
                for w in WORKLOADS
            ]
            if any(vals) and any(k in name for k in ("run3", "run4")):  # this session's code
                groups.append((f"{shape} ({name.rsplit('-', 1)[-1]})", shape, vals))
    bw = 0.8 / max(len(groups), 1)
    for k, (label, shape, vals) in enumerate(groups):
        xs = [i + k * bw for i in range(len(WORKLOADS))]
        ax.bar(xs, vals, bw, label=label)
        for x, v, w in zip(xs, vals, WORKLOADS, strict=True):
            if v:
                ax.text(x, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=7)
            t = targets.get((shape, w))
            if t:
                ax.plot([x - bw / 2, x + bw / 2], [t, t], color="black", linewidth=2)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([i + 0.4 - bw / 2 for i in range(len(WORKLOADS))])
    ax.set_xticklabels(WORKLOADS)
    ax.set_ylabel("VLLMEngine pairs/s / LLM.score pairs/s")
    ax.set_title("VLLMEngine vs raw LLM.score, same run (black bars: targets)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1:-1], sys.argv[-1])
