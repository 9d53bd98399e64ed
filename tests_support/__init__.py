"""Helpers the test suite shares (not part of the library)."""

# Settings every CPU vLLM in the suite uses: the CPU backend reads
# gpu_memory_utilization as a share of NUMA node 0's memory, and eager mode starts ~20 s faster.
VLLM_CPU_OPTIONS = dict(dtype="float32", max_model_len=2048, gpu_memory_utilization=0.15, enforce_eager=True)
