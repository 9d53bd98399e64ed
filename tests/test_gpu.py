"""vLLM and the embedded engine on a CUDA GPU against the model card's formula (marked ``gpu``;
skipped without CUDA).

Run on the device machine: ``pytest -m gpu tests/test_gpu.py``. Each vLLM start costs 30-90 s
there, so every test starts as few engines as it can, with options no other test uses (two
engines with the same model and options share one vLLM, which would hide a start problem).

The reference is the model card's computation in float32 on the GPU (full causal LM, last-token
logits, ``softmax([no, yes])[1]``), one unpadded sequence at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from qwen3_rerank import Reranker

torch = pytest.importorskip("torch")


def _cuda_devices() -> int:
    # NVML-based count: unlike torch.cuda.is_available(), it does not initialise CUDA here.
    try:
        return int(torch.cuda.device_count())
    except Exception:  # pragma: no cover - a broken driver
        return 0


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_cuda_devices() == 0, reason="needs a CUDA GPU")]

FP32_TOLERANCE = 1e-5
"""float32 on CUDA, vLLM against the formula (the VLLMEngine docstring's figure; CPU: ~1e-7)."""

QUERIES = ["what is the capital of France?", "how do vaccines work", "tallest towers in Europe"]
TOPICS = ["Paris and France", "the immune system", "steel towers", "river fishing", "tax law", "old maps"]


def _documents(n: int) -> list[str]:
    """``n`` documents of varied topics and lengths (about 20 to 300 tokens)."""
    return [
        f"Document {i} about {TOPICS[i % len(TOPICS)]}. "
        + f"{TOPICS[(i * 7) % len(TOPICS)]} matters. " * (1 + (i * 5) % 40)
        for i in range(n)
    ]


def formula_scores(model_dir, sequences) -> list[float]:
    """The model card's P(yes) in float32 on the GPU."""
    from transformers import AutoModelForCausalLM

    from qwen3_rerank import Qwen3Tokenizer

    tok = Qwen3Tokenizer.from_pretrained(model_dir)
    yes, no = tok.token_id("yes"), tok.token_id("no")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to("cuda").eval()
    out = []
    # Full float32 matmuls whatever an imported library chose (TF32 would be the gap under test).
    saved = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.inference_mode():
            for ids in sequences:
                logits = model(torch.tensor([list(ids)], device="cuda")).logits[0, -1, :].float()
                out.append(float(torch.softmax(torch.stack([logits[no], logits[yes]]), dim=0)[1]))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])
    del model
    torch.cuda.empty_cache()
    return out


def _plan(reranker, queries, docs):
    return reranker.plan(queries, [docs] * len(queries)).pairs


def _fp32_parity(engine, model_dir, n_docs=12):
    """vLLM's scores of a mixed-length batch against the formula, within FP32_TOLERANCE."""
    reranker = Reranker(engine, max_length=512)
    pairs = _plan(reranker, QUERIES, _documents(n_docs))
    got = engine.score(pairs).scores
    expected = formula_scores(model_dir, [p.input_ids for p in pairs])
    worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    assert worst <= FP32_TOLERANCE, f"max |vLLM - formula| = {worst:.3g} > {FP32_TOLERANCE}"
    return got


def kendall_tau(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += 1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 if (a[i] - a[j]) * (b[i] - b[j]) < 0 else 0
    return 2 * s / (n * (n - 1))


@pytest.fixture(scope="module")
def vllm_module():
    return pytest.importorskip("vllm")


def test_vllm_after_cuda_initialised(vllm_module, tiny_model):
    """A TransformersEngine on CUDA first, then a VLLMEngine in the same process (issue 11).

    Also the float32 parity on CUDA: Triton attention must not run float32 in TF32.
    """
    from qwen3_rerank.engines.transformers_engine import TransformersEngine
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    embedded = TransformersEngine(tiny_model, device="cuda", dtype="float32")
    try:
        pairs = _plan(Reranker(embedded, max_length=512), QUERIES, _documents(12))
        reference = embedded.score(pairs).scores
    finally:
        embedded.close()
    assert torch.cuda.is_initialized()
    triton_before = os.environ.get("TRITON_F32_DEFAULT")
    engine = VLLMEngine(tiny_model, dtype="float32", max_model_len=1536, gpu_memory_utilization=0.2, enforce_eager=True)
    try:
        assert engine.dtype == "float32"
        assert os.environ.get("TRITON_F32_DEFAULT") == triton_before  # set for vLLM's start only
        got = engine.score(pairs).scores
        worst = max(abs(a - b) for a, b in zip(got, reference, strict=True))
        assert worst <= FP32_TOLERANCE, f"max |vLLM - TransformersEngine| = {worst:.3g}"
        _fp32_parity(engine, tiny_model)
    finally:
        engine.close()


def test_vllm_after_a_cuda_availability_check(vllm_module, tiny_model, tmp_path):
    """``torch.cuda.is_available()`` initialises the CUDA driver but not torch's CUDA state, so
    vLLM's own check (``torch.cuda.is_initialized()``) still forks; the engine must spawn.
    Run in a fresh process, as a user's script would be."""
    script = tmp_path / "after_availability_check.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys

            import torch

            from qwen3_rerank import Reranker
            from qwen3_rerank.engines.vllm_engine import VLLMEngine


            def main():
                assert torch.cuda.is_available() and not torch.cuda.is_initialized()
                engine = VLLMEngine(sys.argv[1], dtype="float32", max_model_len=1024,
                                    gpu_memory_utilization=0.15, enforce_eager=True)
                ranking = Reranker(engine).rerank("capital of France", ["Paris is in France.", "Bananas."])
                print("RANKED", len(ranking))
                engine.close()


            if __name__ == "__main__":
                main()
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script), str(tiny_model)], capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0 and "RANKED 2" in proc.stdout, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def model_0_6b(tmp_path_factory):
    """A random-weight checkpoint of Qwen3-Reranker-0.6B's shape, bf16, built on the GPU."""
    from qwen3_rerank.testing import make_test_model

    return make_test_model(tmp_path_factory.mktemp("qwen3-0.6b"), shape="0.6B", dtype="bfloat16", device="cuda")


def _bf16_checks(got, expected, n_docs):
    """max |P diff| <= 0.02, mean top-10 overlap >= 0.8 and mean Kendall tau >= 0.8 per query."""
    worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    overlaps, taus, spreads = [], [], []
    for q in range(len(got) // n_docs):
        g, e = got[q * n_docs : (q + 1) * n_docs], expected[q * n_docs : (q + 1) * n_docs]
        top = lambda s: set(sorted(range(n_docs), key=lambda i: -s[i])[:10])  # noqa: E731
        overlaps.append(len(top(g) & top(e)) / 10)
        taus.append(kendall_tau(g, e))
        spreads.append(max(e) - min(e))
    summary = f"max|diff|={worst:.4f} top10={overlaps} tau={[round(t, 3) for t in taus]} spread={spreads}"
    assert worst <= 0.02, summary
    assert sum(overlaps) / len(overlaps) >= 0.8, summary
    assert sum(taus) / len(taus) >= 0.8, summary
    return worst


def test_transformers_engine_bf16_at_the_real_0_6b_shape(model_0_6b):
    """TransformersEngine in bf16 at the 0.6B shape against the float32 formula (the same thresholds
    as vLLM's bf16 test): its CUDA default (packed and compiled), packed uncompiled, and padded, with
    and without prefix reuse; several batches in flight (batch_size=16)."""
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    modes = {"default": {}, "eager": {"compile": False}, "padded": {"packed": False}}
    docs = _documents(30)
    results = {}
    for mode, options in modes.items():
        for reuse in (False, True) if mode != "eager" else (False,):
            engine = TransformersEngine(model_0_6b, device="cuda", dtype="bfloat16", batch_size=16,
                                        reuse_prefix=reuse, **options)  # fmt: skip
            try:
                assert engine.packed is (mode != "padded")  # "auto" packs on CUDA in bf16
                if mode == "default":
                    assert engine._packed.compiled  # "auto" compiles on CUDA in bf16 (Triton is there)
                pairs = _plan(Reranker(engine), QUERIES, docs)
                results[mode, reuse] = engine.score(pairs).scores
                if mode == "default":
                    assert engine._packed.compiled  # no fallback happened
            finally:
                engine.close()
    expected = formula_scores(model_0_6b, [p.input_ids for p in pairs])
    for got in results.values():
        _bf16_checks(got, expected, 30)
    for mode in ("default", "eager"):
        vs_padded = max(abs(a - b) for a, b in zip(results[mode, False], results["padded", False], strict=True))
        assert vs_padded <= 0.02, (mode, vs_padded)


def test_packed_float32_and_compiled_bf16_on_cuda(tiny_model):
    """The packed path's other attention (one call per sequence) in float32 on CUDA, within
    FP32_TOLERANCE of the formula; and compile=True in bf16 against the uncompiled packed path."""
    from qwen3_rerank.engines.transformers_engine import TransformersEngine

    exact = TransformersEngine(tiny_model, device="cuda", dtype="float32", packed=True)
    try:
        assert exact.packed and not exact._packed.flash and not exact._packed.compiled  # "auto": half precision only
        _fp32_parity(exact, tiny_model)
    finally:
        exact.close()
    scores = {}
    for compile in (False, True):
        engine = TransformersEngine(tiny_model, device="cuda", dtype="bfloat16", compile=compile, reuse_prefix=True)
        try:
            assert engine.packed and engine._packed.flash
            pairs = _plan(Reranker(engine, max_length=512), QUERIES, _documents(12))
            scores[compile] = engine.score(pairs).scores
        finally:
            engine.close()
    worst = max(abs(a - b) for a, b in zip(scores[True], scores[False], strict=True))
    assert worst <= 0.02, worst


def test_bf16_parity_at_the_real_0_6b_shape(vllm_module, model_0_6b):
    """bf16 vLLM at Qwen3-Reranker-0.6B's shape (random weights) against the float32 formula.

    Thresholds (per query over 30 documents, prefix caching off): max |P diff| <= 0.02 (bf16 at
    0.6B; a cached prefix alone moved scores by 0.0014 on an H100), mean top-10 overlap >= 0.8,
    mean Kendall tau >= 0.8.
    """
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    model_dir = model_0_6b
    docs = _documents(30)
    engine = VLLMEngine(model_dir, dtype="bfloat16", max_model_len=2048, enable_prefix_caching=False,
                        gpu_memory_utilization=0.3, enforce_eager=True)  # fmt: skip
    try:
        assert engine.dtype == "bfloat16"
        pairs = _plan(Reranker(engine), QUERIES, docs)
        got = engine.score(pairs).scores
    finally:
        engine.close()
    expected = formula_scores(model_dir, [p.input_ids for p in pairs])
    _bf16_checks(got, expected, 30)


def test_two_replicas_on_one_gpu(vllm_module, tiny_model):
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        tiny_model, dtype="float32", replicas=2, max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True
    )
    try:
        _fp32_parity(engine, tiny_model, n_docs=40)  # 40 documents a query: split over both
        assert all(n > 0 for n in engine.stats.replica_requests), engine.stats
    finally:
        engine.close()


@pytest.mark.skipif(_cuda_devices() < 2, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("parallel", [{"tensor_parallel_size": 2}, {"data_parallel_size": 2}], ids=["tp2", "dp2"])
def test_two_gpus_score_as_one(vllm_module, tiny_model, parallel):
    """Tensor and data parallelism over 2 GPUs give the one-GPU float32 scores (the formula)."""
    from qwen3_rerank.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        tiny_model, dtype="float32", max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True, **parallel
    )
    try:
        _fp32_parity(engine, tiny_model, n_docs=20)
    finally:
        engine.close()
