"""Isolated reproductions on the GPU machine for the findings of the first GPU run.

Raw vLLM only (no qwen3_rerank engine code), so each finding is shown independently of the
library: run with the recipe's vLLM active (see tools/gpu/README.md):

    python3 tools/gpu/probe_issue11.py fp32 hang

* ``fp32``: the tiny model in float32 through ``LLM.classify`` on token ids, against the
  model-card formula (transformers fp32 on the CPU), with vLLM's defaults and with
  ``TRITON_F32_DEFAULT=ieee`` (Triton's ``tl.dot`` otherwise rounds fp32 inputs to TF32).
* ``hang``: one pooling request of exactly ``max_model_len`` tokens whose prefill is split
  across steps (``max_num_batched_tokens`` smaller than the request), with ``max_model_len`` = L
  and L + 1; each in a subprocess stopped after 90 s.

Prints one JSON line per result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def _sequences(model: str, n: int = 24) -> list[list[int]]:
    from qwen3_rerank import PairEncoder, Qwen3Tokenizer

    enc = PairEncoder(Qwen3Tokenizer.from_pretrained(model))
    docs = [f"word{i} " * (5 + 37 * i) for i in range(n)]
    q = enc.encode_queries(["what is the capital of France?"], None)[0]
    pairs, _ = enc.build(q, enc.encode_documents(docs), max_length=2000)  # below max_model_len: no hang here
    return [p.input_ids for p in pairs]


def fp32_child(model: str) -> None:
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    seqs = _sequences(model)
    llm = LLM(
        model=model,
        runner="pooling",
        hf_overrides=OVERRIDES,
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        gpu_memory_utilization=0.2,
        enable_prefix_caching=False,
    )
    out = llm.classify([TokensPrompt(prompt_token_ids=s) for s in seqs])
    print("SCORES", json.dumps([o.outputs.probs[0] for o in out]), flush=True)


def fp32(model: str) -> None:
    from qwen3_rerank.testing import reference_scores

    ref = reference_scores(model, _sequences(model))
    for label, env in (("default", {}), ("TRITON_F32_DEFAULT=ieee", {"TRITON_F32_DEFAULT": "ieee"})):
        t = time.time()
        p = subprocess.run(
            [sys.executable, __file__, "fp32-child", model],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = [x for x in p.stdout.splitlines() if x.startswith("SCORES ")]
        if not line:
            print(json.dumps({"probe": "fp32", "env": label, "error": p.stderr[-2000:]}), flush=True)
            continue
        got = json.loads(line[0][7:])
        diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
        print(
            json.dumps(
                {
                    "probe": "fp32",
                    "env": label,
                    "pairs": len(ref),
                    "max_abs_diff": diff,
                    "seconds": round(time.time() - t, 1),
                }
            ),
            flush=True,
        )


def hang_child(model: str, max_model_len: int, length: int) -> None:
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=model,
        runner="pooling",
        hf_overrides=OVERRIDES,
        dtype="float32",
        enforce_eager=True,
        max_model_len=max_model_len,
        max_num_batched_tokens=256,
        enable_chunked_prefill=True,
        gpu_memory_utilization=0.2,
    )
    ids = _sequences(model)[-1]
    seq = (ids * (length // len(ids) + 1))[:length]
    t = time.time()
    out = llm.classify([TokensPrompt(prompt_token_ids=seq)])
    print("DONE", round(time.time() - t, 2), out[0].outputs.probs[0], flush=True)


def hang(model: str) -> None:
    for mml, length in ((1024, 1024), (1025, 1024), (1024, 1023)):
        t = time.time()
        try:
            p = subprocess.run(
                [sys.executable, __file__, "hang-child", model, str(mml), str(length)],
                capture_output=True,
                text=True,
                timeout=90,
                start_new_session=True,
            )
            done = [x for x in p.stdout.splitlines() if x.startswith("DONE")]
            result = {"returned": bool(done), "detail": done[0] if done else p.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            result = {"returned": False, "detail": "no answer within 90 s (killed)"}
            subprocess.run(["pkill", "-9", "-f", "hang-child"], check=False)
        print(
            json.dumps(
                {
                    "probe": "hang",
                    "max_model_len": mml,
                    "tokens": length,
                    "seconds": round(time.time() - t, 1),
                    **result,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1] == "fp32-child":
        fp32_child(sys.argv[2])
    elif sys.argv[1] == "hang-child":
        hang_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        from qwen3_rerank.testing import make_test_model

        model = make_test_model(tempfile.mkdtemp(prefix="tiny-"))
        import vllm

        print(json.dumps({"vllm": vllm.__version__}), flush=True)
        for probe in sys.argv[1:]:
            {"fp32": fp32, "hang": hang}[probe](str(model))
