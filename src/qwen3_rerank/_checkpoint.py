"""Checkpoint sniffing: which Qwen3-Reranker form a model is, read from its ``config.json``.

Used by every local engine and the CLI before anything heavy is loaded, so a wrong checkpoint is
refused in milliseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["CAUSAL", "SEQ_CLS", "max_position_embeddings", "read_architecture"]

CAUSAL = "Qwen3ForCausalLM"
SEQ_CLS = "Qwen3ForSequenceClassification"


def read_architecture(model: str | os.PathLike[str], *, revision: str | None = None) -> tuple[str, dict[str, Any]]:
    """Read ``config.json`` (local directory or hub) and return (architecture, config dict).

    Raises:
        ConfigurationError: the checkpoint is not a Qwen3 reranker in either supported form.
    """
    path = Path(model)
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ConfigurationError(f"{str(path)!r} has no config.json; is it a model directory?")
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(model), "config.json", revision=revision))
        except Exception as exc:
            raise ConfigurationError(
                f"could not read the config of {str(model)!r}: {exc}. Pass a local directory or "
                "check the model id and your network/HF_TOKEN."
            ) from exc
    config = json.loads(file.read_text())
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch == SEQ_CLS and config.get("num_labels", len(config.get("id2label", {})) or 1) != 1:
        raise ConfigurationError(
            f"{str(model)!r} is a Qwen3ForSequenceClassification with more than one label; a "
            "converted Qwen3-Reranker has exactly one (the W_yes - W_no row)."
        )
    if arch not in (CAUSAL, SEQ_CLS):
        raise ConfigurationError(
            f"{str(model)!r} has architecture {arch or 'unknown'!r}; expected a Qwen3-Reranker "
            f"checkpoint: the original {CAUSAL} (e.g. Qwen/Qwen3-Reranker-0.6B) or its {SEQ_CLS} "
            "conversion."
        )
    return arch, config


def max_position_embeddings(config: dict[str, Any]) -> int | None:
    """The model's own context length from its config (``None`` if the config does not say)."""
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None
