"""Reference engines: the scores an engine under test is compared with (``qwen3-rerank check``).

* :class:`OfficialFormula`, for original (causal-LM) checkpoints: the model card's computation
  itself, full-vocabulary logits at the last position, ``softmax([logit_no, logit_yes])[1]``, in
  float32, one sequence at a time. Slow and obviously right.
* For converted ``Qwen3ForSequenceClassification`` checkpoints: the embedded
  :class:`~qwen3_rerank.engines.TransformersEngine` in float32 (its score row is the checkpoint's).

torch and transformers are imported only when a reference is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import prompts
from .._devices import prepare_device, quiet_transformers
from .._exceptions import missing_dependency
from .._tokenizer import Qwen3Tokenizer
from .._types import EncodedPair, EngineOutput
from ..engines import Engine

__all__ = ["OfficialFormula", "build_reference"]


class OfficialFormula(Engine):
    """The model card's score, the slow way: full causal-LM logits at the last position of each
    unpadded sequence, ``softmax([logit_no, logit_yes])[1]``, in float32.

    Args:
        model: Hub id or local directory of an original (``Qwen3ForCausalLM``) checkpoint.
        device: Where to run it (default ``"cpu"``).

    Example:
        >>> from qwen3_rerank import Reranker
        >>> from qwen3_rerank.diagnosis.reference import OfficialFormula
        >>> reference = OfficialFormula("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> Reranker(reference).rerank("what is BM25?", ["BM25 is a ranking function."])  # doctest: +SKIP
    """

    name = "official"

    def __init__(self, model: str, *, device: str = "cpu") -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise missing_dependency(getattr(exc, "name", None) or "torch", "torch", exc) from exc
        prepare_device(device)  # on "npu": imports torch_npu before the model moves there
        self._torch = torch
        self._tokenizer = Qwen3Tokenizer.from_pretrained(model)
        self._yes = self._tokenizer.token_id(prompts.YES_TOKEN)
        self._no = self._tokenizer.token_id(prompts.NO_TOKEN)
        self.device = device
        self.dtype = "float32"
        with quiet_transformers():  # no "Loading weights" bar on the terminal of the program using us
            # transformers types PreTrainedModel.to as @wraps(torch.nn.Module.to): a device string is refused.
            loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
            self._model: Any = loaded.to(device).eval()  # type: ignore[arg-type]

    @property
    def tokenizer(self) -> Qwen3Tokenizer:
        return self._tokenizer

    def logits(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """``logit_yes - logit_no`` at the last position of each token sequence.

        This is the model card's formula, and its only implementation in the library:
        ``softmax([logit_no, logit_yes])[1]`` is ``sigmoid(logit_yes - logit_no)``, which
        :func:`~qwen3_rerank._scores.probability` computes (:func:`qwen3_rerank.testing.reference_scores`
        is this method followed by that conversion).
        """
        torch = self._torch
        out = []
        with torch.inference_mode():
            for ids in sequences:
                row = self._model(torch.tensor([list(ids)]).to(self.device)).logits[0, -1, :].float()
                out.append(float(row[self._yes] - row[self._no]))
        return out

    def score(self, pairs: Sequence[EncodedPair]) -> EngineOutput:
        logits = self.logits([p.input_ids for p in pairs])
        return EngineOutput(logits=logits)

    async def ascore(self, pairs: Sequence[EncodedPair]) -> EngineOutput:  # pragma: no cover - check is sync
        return self.score(pairs)

    def close(self) -> None:
        self._model = None


def build_reference(model: str, *, device: str = "cpu") -> tuple[Engine, str]:
    """The float32 reference for ``model``'s weights, and a one-line description of it.

    ``device="auto"`` picks CUDA, then Ascend NPU, then CPU.

    Raises:
        ConfigurationError: ``model`` is not a Qwen3-Reranker checkpoint.
        MissingDependencyError: torch or transformers is not installed.
    """
    from ..engines.transformers_engine import CAUSAL, TransformersEngine, read_architecture

    if device == "auto":
        from .._devices import auto_device

        device = auto_device()
    architecture, _ = read_architecture(model)
    if architecture == CAUSAL:
        return OfficialFormula(
            model, device=device
        ), f"the official formula (full causal-LM logits, float32 on {device})"
    engine = TransformersEngine(model, device=device, dtype="float32")
    return engine, f"the embedded engine (W_yes - W_no score row, float32 on {device})"
