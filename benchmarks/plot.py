"""Draw benchmarks/results.png from the GPU results (and the sweep) in benchmarks/results/.

python benchmarks/plot.py benchmarks/results/gpu-h100-2026-11-27.jsonl benchmarks/results.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from summarize import load

ENGINES = [
    ("transformers", "official-bs16", "official model-card code (bs 16)"),
    ("transformers", "official-bs32", "official model-card code (bs 32)"),
    ("transformers", "engine-bs16-prefixoff", "TransformersEngine (bs 16, plain)"),
    ("transformers", "engine-bs16-prefixon", "TransformersEngine (bs 16, per-query prefix reuse)"),
    ("transformers", "engine-bs64-prefixon", "TransformersEngine (bs 64, per-query prefix reuse)"),
    ("vllm", "vllm-LLM.score", "vllm LLM.score (strings)"),
    ("vllm", "VLLMEngine+Reranker", "VLLMEngine via Reranker"),
]


def main(path: str, out: str) -> None:
    rows = [r for r in load(path) if "pairs_per_s" in r]
    last = {}
    for r in rows:
        last[(r["suite"], r["shape"], r.get("workload"), r["engine"])] = r
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    for ax, shape in zip(axes[0], ("0.6B", "8B")):
        wls = ["W1", "W2", "W3"]
        width = 0.8 / len(ENGINES)
        for k, (suite, eng, label) in enumerate(ENGINES):
            vals = [last.get((suite, shape, w, eng), {}).get("pairs_per_s", 0) for w in wls]
            xs = [i + k * width for i in range(len(wls))]
            bars = ax.bar(xs, vals, width, label=label)
            for x, v in zip(xs, vals):
                if v:
                    ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7, rotation=90)
            del bars
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))])
        ax.set_xticklabels(["W1 8x100, ~335 tok", "W2 8x100, ~110 tok", "W3 4x50, ~2000 tok"])
        ax.set_yscale("log")
        top = max((r["pairs_per_s"] for k, r in last.items() if k[1] == shape and k[2] in wls), default=1)
        ax.set_ylim(top=top * 8)  # room for the legend above the bars
        ax.set_ylabel("pairs/s (log)")
        ax.set_title(f"Qwen3-Reranker-{shape} shape (random init, bf16), one H100")
        ax.legend(fontsize=7)
    for ax, sweep, xlabel in (
        (axes[1][0], "docs", "documents per query (1 query, ~341 tok/pair)"),
        (axes[1][1], "tokens", "words per document (1 query x 100 docs)"),
    ):
        for suite, eng, label in [
            ("transformers", "engine-default", "TransformersEngine (bs 16, per-query prefix reuse)"),
            ("vllm", "vllm-LLM.score", "vllm LLM.score (strings)"),
            ("vllm", "VLLMEngine+Reranker", "VLLMEngine via Reranker"),
        ]:
            pts = sorted(
                (r["x"], r["pairs_per_s"])
                for r in last.values()
                if r.get("sweep") == sweep and r["suite"] == suite and r["engine"] == eng and r["shape"] == "0.6B"
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs/s (log)")
        ax.set_title(f"0.6B scaling sweep, one H100 ({sweep})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
