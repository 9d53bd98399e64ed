"""The engine self-test behind ``qwen3-rerank check``, as one subsystem.

The modules, bottom up (each imports only those above it, and the core):

* :mod:`~qwen3_rerank.diagnosis._cases`: the fixed pairs every check scores;
* :mod:`~qwen3_rerank.diagnosis.reference`: the reference engines (the model card's formula,
  :class:`~qwen3_rerank.diagnosis.reference.OfficialFormula`, for original checkpoints);
* :mod:`~qwen3_rerank.diagnosis.clients`: what OTHER clients of a remote server get;
* :mod:`~qwen3_rerank.diagnosis._check`: the comparison and its diagnosis (:func:`run_check`).

Example:
    >>> from qwen3_rerank.diagnosis import format_check_report, run_check
    >>> from qwen3_rerank.diagnosis.reference import build_reference
    >>> from qwen3_rerank.engines import TransformersEngine
    >>> engine = TransformersEngine("Qwen/Qwen3-Reranker-0.6B", dtype="bfloat16")  # doctest: +SKIP
    >>> reference, _ = build_reference("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> print(format_check_report(run_check(engine, reference)))  # doctest: +SKIP
"""

from __future__ import annotations

from ._cases import CHECK_CASES, CHECK_MAX_LENGTH, INJECTION_DOCUMENT, CheckCase
from ._check import FIXES, CheckReport, format_check_report, run_check

__all__ = [
    "CHECK_CASES",
    "CHECK_MAX_LENGTH",
    "FIXES",
    "INJECTION_DOCUMENT",
    "CheckCase",
    "CheckReport",
    "format_check_report",
    "run_check",
]
