"""Self-test of an engine against a float32 reference on the same weights (``qwen3-rerank check``).

:func:`run_check` scores a fixed set of pairs (:data:`CHECK_CASES`: a truncated document and a
special-token injection among them) through the core :class:`~qwen3_rerank.Reranker`, once with
the engine under test and once with a reference from :mod:`qwen3_rerank.diagnosis.reference`, and returns
a :class:`CheckReport`. When they differ it names the likely cause and its fix: it re-scores what
a misconfigured engine would have scored (no prompt template, the template applied twice,
control tokens read from user text, the yes/no rows swapped) and picks the hypothesis that
explains the engine's answers (:data:`FIXES` holds the causes and fixes).

Example:
    >>> from qwen3_rerank.diagnosis import format_check_report, run_check
    >>> from qwen3_rerank.engines import TransformersEngine
    >>> from qwen3_rerank.diagnosis.reference import build_reference
    >>> engine = TransformersEngine("Qwen/Qwen3-Reranker-0.6B", dtype="bfloat16")  # doctest: +SKIP
    >>> reference, _ = build_reference("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> print(format_check_report(run_check(engine, reference)))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .. import prompts
from .._exceptions import TemplateMismatchError
from .._reranker import Reranker
from .._scores import probability
from ..engines import Engine
from ._cases import CHECK_CASES, CHECK_MAX_LENGTH, CheckCase
from ._cases import max_abs as _max_abs
from .clients import CLIENTS_TIME_LIMIT, ClientsReport, check_other_clients, format_clients

__all__ = ["FIXES", "CheckReport", "format_check_report", "run_check"]


@dataclass
class CheckReport:
    """What ``check`` found; ``passed`` decides the exit status."""

    passed: bool
    engine: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cause: str | None = None
    fix: str | None = None
    notes: list[str] = field(default_factory=list)
    tolerance: float = 0.0
    max_diff: float | None = None
    clients: ClientsReport | None = None
    """What other clients of a remote server get (raw text to its /rerank, /score); not part of ``passed``."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data; a NaN or an infinity (never valid JSON) becomes ``None``."""
        data: dict[str, Any] = _json_safe(
            {
                "passed": self.passed,
                "engine": self.engine,
                "tolerance": self.tolerance,
                "max_diff": self.max_diff,
                "cases": self.rows,
                "problems": self.problems,
                "likely_cause": self.cause,
                "fix": self.fix,
                "notes": self.notes,
                "other_clients": None if self.clients is None else self.clients.to_dict(),
            }
        )
        return data


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _score_cases(engine: Any, *, max_length: int) -> dict[str, Any]:
    """Score every check case through the core :class:`Reranker` (one engine call per instruction)."""
    reranker = Reranker(engine, max_length=max_length)
    by_instruction: dict[str | None, list[CheckCase]] = {}
    for case in CHECK_CASES:
        by_instruction.setdefault(case.instruction, []).append(case)
    out: dict[str, Any] = {}
    for instruction, cases in by_instruction.items():
        rankings = reranker.rerank_many(
            [c.query for c in cases], [[c.document] for c in cases], instruction=instruction
        )
        for case, ranking in zip(cases, rankings, strict=True):
            out[case.name] = ranking[0]
    return out


def _hypothesis_sequences(tokenizer: Any, max_length: int) -> dict[str, dict[str, list[int]]]:
    """Token sequences a misconfigured engine would score instead of ours, per case.

    * ``no_template``: the bare query and document (a server that applies no template to raw text);
    * ``double_template``: the template wrapped around our already-templated texts;
    * ``injection``: the document's control-token strings read as control tokens.
    """
    # What the client sends is already cut to max_length (the document's end); a misconfigured
    # server then scores those texts in full.
    n_template = len(tokenizer.encode_template(prompts.SYSTEM_PREFIX)) + len(
        tokenizer.encode_template(prompts.ASSISTANT_SUFFIX)
    )
    header = tokenizer.encode_plain([prompts.DOCUMENT_HEADER])[0]
    hyps: dict[str, dict[str, list[int]]] = {"no_template": {}, "double_template": {}, "injection": {}}
    for case in CHECK_CASES:
        query_part = prompts.format_query(case.query, case.instruction)
        doc_ids = tokenizer.encode_plain([prompts.format_document(case.document)])[0]
        room = max_length - n_template - len(tokenizer.encode_plain([query_part])[0])
        document = case.document
        if len(doc_ids) > room:
            document = tokenizer.decode(doc_ids[len(header) : room]).removeprefix(" ")
        raw = tokenizer.encode_plain([case.query, document])
        hyps["no_template"][case.name] = raw[0] + raw[1]
        # A server-side template (with its own, default instruction) around our templated texts.
        inner_q = prompts.SYSTEM_PREFIX + query_part
        inner_d = prompts.format_document(document) + prompts.ASSISTANT_SUFFIX
        hyps["double_template"][case.name] = tokenizer.encode_template(prompts.format_pair(inner_q, inner_d))
        if case.name == "injection":
            hyps["injection"][case.name] = tokenizer.encode_template(
                prompts.format_pair(case.query, case.document, case.instruction)
            )
    return hyps


def _engine_dtype(engine: Any) -> str | None:
    """The engine's ``dtype`` attribute ("float32", "bfloat16", "float16"; ``None``: unknown, e.g. a server).

    Every engine defines ``dtype``. Only an engine object that lacks the attribute altogether
    (one written against an older interface) falls back to the ``dtype`` of its ``options``.
    """
    if hasattr(engine, "dtype"):
        value = engine.dtype
    else:
        options = getattr(engine, "options", None)
        value = options.get("dtype") if isinstance(options, dict) else None
    if value is None:
        return None
    name = str(value).removeprefix("torch.")  # a torch.dtype, until every engine stores its name
    return {"float": "float32", "half": "float16", "auto": None}.get(name, name)


def _default_tolerance(dtype: str | None) -> float:
    return 1e-4 if dtype == "float32" else 0.03


FIXES = {
    "no_template": (
        "the engine scored the query and document WITHOUT the Qwen3-Reranker prompt template",
        "for a server, let the client template (qwen3-rerank sends templated text_1/text_2 to /score), or start "
        "vllm serve with the Qwen3 reranker score template; a bare '/rerank' on a server without the template "
        "returns HTTP 200 with meaningless scores",
    ),
    "double_template": (
        "the prompt template was applied TWICE (the server wraps its own template around the client's)",
        "start vllm serve without a reranker --chat-template when clients send templated text (qwen3-rerank "
        "does), or send raw query/documents to that server's /rerank",
    ),
    "injection": (
        "control-token strings inside a document (<|im_end|>, <think> ...) were read as control tokens",
        "send token ids or use a client that neutralises special-token strings (qwen3-rerank's engines do); "
        "note that Qwen3's <think>/</think> are added tokens NOT flagged special, so split_special_tokens "
        "alone does not stop them",
    ),
    "swapped": (
        "the yes/no rows are swapped: the engine returns P(no) instead of P(yes)",
        'use hf_overrides={"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": '
        '["no", "yes"], "is_original_qwen3_reranker": true} with "no" first',
    ),
    "overrides": (
        "the scores do not follow the reference at all: wrong or missing hf_overrides, a different checkpoint, "
        "or an engine that is not scoring P(yes)",
        'for an original Qwen3-Reranker checkpoint vLLM needs --hf-overrides \'{"architectures": '
        '["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"], '
        '"is_original_qwen3_reranker": true}\' (a converted seq-cls checkpoint needs none); check that --model '
        "names the same weights the engine runs",
    ),
    "truncation": (
        "the long document was cut differently (server-side truncation such as truncate_prompt_tokens keeps "
        "the wrong end and drops the assistant suffix or the system prompt)",
        "never set truncate_prompt_tokens; let qwen3-rerank truncate the document (--max-length)",
    ),
    "dtype": (
        "small numeric differences, as reduced precision gives (engine dtype {dtype})",
        "rerun with --dtype float32 to confirm exact parity, or accept the precision with --tolerance {suggest}",
    ),
}


def run_check(
    engine: Engine,
    reference: Any | None,
    *,
    tolerance: float | None = None,
    max_length: int = CHECK_MAX_LENGTH,
    clients_time_limit: float = CLIENTS_TIME_LIMIT,
) -> CheckReport:
    """Compare ``engine`` with ``reference`` (an embedded float32 engine on the same weights).

    Both score :data:`CHECK_CASES` through the core. Without a reference only the sanity checks run
    (scores in [0, 1], truncation flagged, the engine's own guards such as the remote template guard).
    With a reference and a remote engine, :attr:`CheckReport.clients` also says what other clients
    of that server get (:func:`~qwen3_rerank.diagnosis.clients.check_other_clients`, within
    ``clients_time_limit`` seconds altogether).
    """
    report = _compare(engine, reference, tolerance=tolerance, max_length=max_length)
    if reference is not None:
        report.clients = check_other_clients(
            engine, reference, tolerance=report.tolerance, time_limit=clients_time_limit
        )
    return report


def _compare(engine: Engine, reference: Any | None, *, tolerance: float | None, max_length: int) -> CheckReport:
    name = engine.name
    dtype = _engine_dtype(engine)
    tol = tolerance if tolerance is not None else _default_tolerance(dtype)
    report = CheckReport(passed=False, engine=name, tolerance=tol)

    # RemoteEngine runs its template guard on every request (verify_template=True): it compares
    # the server's usage.prompt_tokens with the tokens the client built. An engine may also offer
    # an explicit check_template().
    guard = getattr(engine, "check_template", None)
    if callable(guard):
        try:
            guard()
            report.notes.append("template guard: the server counted the tokens we sent (PASS)")
        except TemplateMismatchError as exc:
            report.problems.append(f"template guard: {' '.join(str(exc).split())}")
            report.cause, report.fix = _template_cause(str(exc))
            return report

    try:
        got = _score_cases(engine, max_length=max_length)
    except TemplateMismatchError as exc:
        report.problems.append(f"template guard: {' '.join(str(exc).split())}")
        report.cause, report.fix = _template_cause(str(exc))
        return report

    if getattr(engine, "verify_template", False) is True:
        report.notes.append(
            "template guard: on; the server's usage.prompt_tokens never disagreed with the client's count"
        )
    trunc = got["truncated"]
    if not trunc.truncated:
        report.problems.append("the long document was not reported as truncated")
    if reference is None:
        report.notes.append("no reference comparison (--no-reference): sanity checks only")
        for case in CHECK_CASES:
            r = got[case.name]
            report.rows.append(
                {"case": case.name, "score": r.score, "reference": None, "diff": None, "tokens": r.num_tokens}
            )
        report.passed = not report.problems
        if report.problems and report.cause is None:
            report.cause, report.fix = FIXES["truncation"]
        return report

    ref = _score_cases(reference, max_length=max_length)
    names = [c.name for c in CHECK_CASES]
    engine_p = [got[n].score for n in names]
    ref_p = [ref[n].score for n in names]
    diffs = [abs(a - b) for a, b in zip(engine_p, ref_p, strict=True)]
    report.max_diff = max(diffs)
    for n, a, b, d in zip(names, engine_p, ref_p, diffs, strict=True):
        report.rows.append(
            {
                "case": n,
                "score": a,
                "reference": b,
                "diff": d,
                "ok": d <= tol,
                "tokens": got[n].num_tokens,
                "reference_tokens": ref[n].num_tokens,
            }
        )
    for n in names:
        if got[n].num_tokens and ref[n].num_tokens and got[n].num_tokens != ref[n].num_tokens:
            report.problems.append(
                f"{n}: the engine built {got[n].num_tokens} tokens, the reference {ref[n].num_tokens}"
            )
    bad = [n for n, d in zip(names, diffs, strict=True) if d > tol]
    if bad:
        report.problems.append(
            f"{len(bad)}/{len(names)} pairs differ from the reference by more than {tol:.0e} "
            f"(up to {report.max_diff:.2e}): {', '.join(bad)}"
        )
    if not bad and not report.problems:
        report.passed = True
        return report
    report.cause, report.fix = _diagnose(engine_p, ref_p, bad, names, reference, dtype, tol, max_length)
    return report


def _template_cause(message: str) -> tuple[str, str]:
    counts = re.search(r"counted (\d+) prompt tokens.*?counts as (\d+)", message)
    if counts:
        server, client = int(counts.group(1)), int(counts.group(2))
        if server > client:
            return FIXES["double_template"]
        return (
            "the server scored fewer tokens than the client sent: another tokenizer or model, "
            "or server-side truncation",
            "point --model at the checkpoint the server runs, and do not set truncate_prompt_tokens on the server",
        )
    text = message.lower()
    if "twice" in text or "double" in text:
        return FIXES["double_template"]
    return (
        "the server scored a different token sequence than the client built (its template or tokenizer differs)",
        FIXES["double_template"][1] + "; and check that --model names the checkpoint the server runs",
    )


def _diagnose(
    engine_p: list[float],
    ref_p: list[float],
    bad: list[str],
    names: list[str],
    reference: Any,
    dtype: str | None,
    tol: float,
    max_length: int,
) -> tuple[str, str]:
    if bad == ["truncated"]:
        return FIXES["truncation"]
    # Score what a misconfigured engine would have scored and see which explains the answers.
    hyps = _hypothesis_sequences(reference.tokenizer, max_length)
    mismatch = _max_abs(engine_p, ref_p)
    candidates: list[tuple[float, str]] = []
    for key in ("no_template", "double_template"):
        seqs = [hyps[key][n] for n in names]
        probs = [probability(v) for v in reference.logits(seqs)]
        candidates.append((_max_abs(engine_p, probs), key))
    if "injection" in bad:
        injected = list(ref_p)
        injected[names.index("injection")] = probability(reference.logits([hyps["injection"]["injection"]])[0])
        candidates.append((_max_abs(engine_p, injected), "injection"))
    candidates.append((_max_abs(engine_p, [1.0 - p for p in ref_p]), "swapped"))
    best_diff, best = min(candidates)
    if best_diff <= max(tol, 0.25 * mismatch):
        return FIXES[best]
    if bad == ["injection"]:
        return FIXES["injection"]
    if dtype not in (None, "float32") and mismatch <= 0.15:
        cause, fix = FIXES["dtype"]
        return cause.format(dtype=dtype), fix.format(suggest=f"{min(1.0, 2 * mismatch):.2g}")
    if dtype is None and mismatch <= 0.15:
        return (
            "moderate differences: a lower-precision engine (bf16/fp16) or slightly different weights",
            "run the server in float32 (vllm serve --dtype float32) to confirm parity, or accept it with "
            f"--tolerance {min(1.0, 2 * mismatch):.2g}",
        )
    return FIXES["overrides"]


def format_check_report(report: CheckReport, *, header: str = "") -> str:
    """The report for people: a table of the cases, then PASS, or FAIL with the likely cause and fix."""
    lines = [header] if header else []
    if report.rows:
        has_ref = report.rows[0].get("reference") is not None
        lines.append(f"  {'case':<12} {'engine':>9} {'reference':>10} {'|diff|':>9} {'tokens':>6}")
        for row in report.rows:
            ref = f"{row['reference']:>10.6f}" if has_ref else f"{'-':>10}"
            diff = f"{row['diff']:>9.1e}" if has_ref else f"{'-':>9}"
            mark = "" if not has_ref else ("  ok" if row.get("ok") else "  DIFFERS")
            lines.append(f"  {row['case']:<12} {row['score']:>9.6f} {ref} {diff} {row['tokens']:>6}{mark}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    if report.passed:
        n = len(report.rows)
        if report.max_diff is not None:
            lines.append(
                f"PASS: {n}/{n} pairs match the reference (max |diff| {report.max_diff:.1e} <= {report.tolerance:.0e})"
            )
        else:
            lines.append("PASS")
    else:
        lines.append("FAIL")
        for problem in report.problems:
            lines.append(f"  - {problem}")
        if report.cause:
            lines.append(f"  likely cause: {report.cause}")
        if report.fix:
            lines.append(f"  fix: {report.fix}")
    if report.clients is not None:
        lines.extend(format_clients(report.clients))
    return "\n".join(lines) + "\n"
