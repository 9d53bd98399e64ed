"""GPU benchmark driver: runs phases in subprocesses, resumable, against a wall-clock deadline.

One command per device call (see benchmarks/README.md for the full recipe). Phases already
completed on this machine (marker files in ``--state``) are skipped, so the same command can be
repeated on a warm machine to continue. Results: ``<state>/results.jsonl`` and one log per
phase, copied to ``$OUT`` after every phase.

Phases
    build-<shape>          random-init real-shape checkpoint (bf16, built on the GPU)
    tf-<shape>             bench_transformers.py (official model-card code vs TransformersEngine)
    vllm-raw-<shape>       bench_vllm.py --mode raw    (vllm.LLM.score, token-id LLM.classify)
    vllm-engine-<shape>    bench_vllm.py --mode engine (VLLMEngine through Reranker)
    vllm-replicas2-<shape> the same with VLLMEngine(replicas=2): two vLLM instances on the GPU
    vllm-tuned-<shape>     the same with vllm.LLM's own step budget passed to VLLMEngine
                           (max_num_batched_tokens=16384, max_num_seqs=1024; see RESULTS.md)
    vllm-big-<shape>       VLLMEngine with 4x that step budget (max_num_batched_tokens=65536)
    vllm-r2big-<shape>     replicas=2, each with max_num_batched_tokens=32768
    tfpack-<shape>         the card's usage vs TransformersEngine padded / packed uncompiled / its
                           defaults (packed, compiled) / a 32,768-token budget (0.6B: W1-W3;
                           larger shapes: padded and the defaults, W1)
    prof-<shape>           profile_tf.py: a torch.profiler breakdown of one W1 call per mode
    tfsweep-<shape>        bench_transformers.py --sweep only, with the engine's defaults
    tfdef-<shape>          the card's usage vs the engine's defaults (W1-W3), then the sweep
    st-<shape>             bench_st.py: sentence-transformers' CrossEncoder (its prompts, the card's
                           prompt) vs TransformersEngine defaults, W1-W3 (needs sentence-transformers)
    growth-tf-<shape>      how cost grows: bench_transformers.py --sweep only (TransformersEngine
                           defaults; pairs/s and peak memory beyond the weights per point)
    growth-vllm-<shape>    how cost grows: bench_vllm.py --mode engine --sweep only (VLLMEngine defaults)

``--device cpu`` runs the same phases on the CPU in float32 (vLLM phases: float32, eager), to
smoke-test a command with ``build-tiny`` before spending GPU time on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Per phase: (estimated seconds, extra arguments). The bench scripts also stop measuring at
# their --budget, so a phase ends cleanly even when the estimate is off.
# vllm-engine-<shape> also runs the growth sweep (one engine start for both; growth-vllm-<shape>
# runs the sweep alone).
VLLM_SWEEP = {"0.6B": True, "4B": False, "8B": False}
TF_CONFIGS = "16:off,64:off,16:on,64:on,64:auto"
TF_CONFIGS_LARGE = "16:off,64:off,64:on,64:auto"
# The packed path (issue 24): padded (the default before it) beside packed uncompiled (compile=False),
# the defaults (packed and compiled on CUDA, batches bounded by tokens) and twice the token budget.
TF_PACK = "64:auto:padded,none:auto:packed,none:auto,none:auto:auto:32768"
TF_PACK_LARGE = "64:auto:padded,none:auto"


def phase_command(phase: str, state: Path, budget: float, device: str = "cuda") -> list[str]:
    py = sys.executable
    kind, _, shape = phase.rpartition("-")
    model = str(state / "models" / shape)
    out = str(state / "results.jsonl")
    common = ["--shape", shape, "--model", model, "--out", out, "--budget", str(budget)]  # every bench script
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_device = ["--device", device, "--dtype", dtype]  # bench_transformers.py, bench_st.py
    if kind == "build":
        code = (
            "from qwen3_rerank.testing import make_test_model; import sys; "
            f"make_test_model({model!r}, shape={shape!r}, dtype={dtype!r}, device={device!r})"
        )
        return [py, "-c", code]
    if kind == "prof":
        return [py, str(HERE / "profile_tf.py"), *common]
    if kind == "st":
        return [py, str(HERE / "bench_st.py"), *common, *torch_device]
    if kind in ("tf", "tfsweep", "tfdef", "tfpack", "growth-tf"):
        if kind == "growth-tf":
            extra = ["--official-batch", "", "--engine-configs", "", "--workloads", "", "--sweep"]
        elif kind == "tfpack":
            configs = TF_PACK if shape == "0.6B" else TF_PACK_LARGE
            extra = ["--official-batch", "0", "--engine-configs", configs]
            extra += [] if shape == "0.6B" else ["--workloads", "W1"]
        elif kind == "tfdef":
            extra = ["--official-batch", "0", "--engine-configs", "none:auto", "--sweep"]
        elif kind == "tfsweep":
            extra = ["--official-batch", "", "--engine-configs", "", "--sweep", "--workloads", "W1"]
        elif shape == "0.6B":
            extra = ["--official-batch", "0,16,32", "--engine-configs", TF_CONFIGS]
        else:  # larger shapes: the card's usage and bs16 as baselines, W1 and W2 only
            extra = ["--official-batch", "0,16", "--engine-configs", TF_CONFIGS_LARGE, "--workloads", "W1,W2"]
        return [py, str(HERE / "bench_transformers.py"), *common, *torch_device, *extra]
    if kind in ("vllm-raw", "vllm-engine", "vllm-tuned", "vllm-replicas2", "vllm-big", "vllm-r2big", "growth-vllm"):
        mode = "raw" if kind == "vllm-raw" else "engine"
        extra = ["--sweep"] if kind == "vllm-engine" and VLLM_SWEEP.get(shape) else []
        if kind == "growth-vllm":
            extra = ["--workloads", "", "--sweep"]
        if not device.startswith("cuda"):  # vLLM's CPU build, as run_cpu.py starts it
            extra += ["--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.1"]
        if kind == "vllm-tuned":
            extra += ["--engine-kw", "max_num_batched_tokens=16384", "--engine-kw", "max_num_seqs=1024"]
        if kind == "vllm-replicas2":
            extra += ["--engine-kw", "replicas=2"]
        if kind == "vllm-big":
            extra += ["--engine-kw", "max_num_batched_tokens=65536", "--engine-kw", "max_num_seqs=1024"]
        if kind == "vllm-r2big":
            extra += ["--engine-kw", "replicas=2", "--engine-kw", "max_num_batched_tokens=32768"]
        return [
            py,
            str(HERE / "bench_vllm.py"),
            "--mode",
            mode,
            *common,
            "--scores",
            str(state / f"scores-{shape}.json"),
            *extra,
        ]
    raise SystemExit(f"unknown phase {phase!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phases", nargs="+")
    ap.add_argument("--deadline", type=float, default=540, help="seconds from now for the whole command")
    ap.add_argument("--state", default=os.path.expanduser("~/qwen3-bench"))
    ap.add_argument("--budget", default="", help="phase=seconds,... measuring budget per phase")
    ap.add_argument("--device", default="cuda", help="cpu: the same phases in float32, to smoke-test a command")
    args = ap.parse_args()
    end = time.monotonic() + args.deadline
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    budgets = dict(kv.split("=") for kv in args.budget.split(",") if kv)
    out_dir = Path(os.environ.get("OUT", state / "out"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}")
    for phase in args.phases:
        done = state / f"{phase}.done"
        if done.exists():
            print(f"== {phase}: done earlier, skipped", flush=True)
            continue
        left = end - time.monotonic()
        if left < 30:
            print(f"== {phase}: not started, {left:.0f} s left", flush=True)
            continue
        budget = float(budgets.get(phase, 240))
        # vLLM phases spend ~100 s starting before their measuring budget begins.
        startup = (200 if "replicas" in phase or "r2" in phase else 110) if "vllm" in phase else 0
        cmd = phase_command(phase, state, min(budget, left - 40 - startup), args.device)
        print(f"== {phase}: {' '.join(cmd[:3])} ... ({left:.0f} s left)", flush=True)
        t0 = time.monotonic()
        with open(state / f"{phase}.log", "w") as logf:
            try:
                rc = subprocess.run(  # noqa: PLW1510 - the return code is read
                    cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=max(left - 10, 1), cwd=ROOT
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        print(f"== {phase}: rc={rc} in {time.monotonic() - t0:.0f} s", flush=True)
        if rc == 0:
            done.touch()
        else:
            print((state / f"{phase}.log").read_text(errors="replace")[-2500:], flush=True)
        # Copy results after every phase: whatever happens next, they come back.
        out_dir.mkdir(parents=True, exist_ok=True)
        if (state / "results.jsonl").exists():
            shutil.copy(state / "results.jsonl", out_dir / "results.jsonl")
        logs = sorted(state.glob("*.log"))
        with open(out_dir / "logs.txt", "w") as f:
            f.writelines(f"===== {p.name}\n{p.read_text(errors='replace')[-20000:]}\n" for p in logs)
    subprocess.run([sys.executable, str(HERE / "summarize.py"), str(state / "results.jsonl")], check=False)


if __name__ == "__main__":
    main()
