"""sentence-transformers 6 ``CrossEncoder`` vs ``TransformersEngine`` on the same checkpoint.

Usage (results appended as JSON lines; every row runs in a fresh process of its own):
    python benchmarks/bench_st.py --shape 0.6B --model DIR --out results.jsonl [--budget 150]
    python benchmarks/bench_st.py --shape 0.6B --model DIR --out st-cpu.jsonl --device cpu \\
        --dtype float32 --counts W1=2x8,W2=2x8,W3=1x2

Needs ``pip install sentence-transformers==6.0.1`` (not a dependency of qwen3-rerank).

Rows (``engine`` in the records), all timed from raw text to scores, one warm-up, fresh documents
for every timed repetition (``workloads.make_inputs(wl, rep)``):

``st-CrossEncoder (its prompts)``
    ``CrossEncoder(model_dir).predict(pairs)`` on the checkpoint as it is. For a causal-LM
    checkpoint sentence-transformers 6 builds ``Transformer(transformer_task="text-generation")`` +
    ``LogitScore(true_token_id=<"yes">, false_token_id=<"no">)`` with a sigmoid, so the score is
    ``sigmoid(logit_yes - logit_no)``, the card's P(yes) (``sentence_transformers/cross_encoder/
    model.py``, ``CrossEncoder._load_default_modules``; ``cross_encoder/modules/logit_score.py``).
    The prompt: with no chat template in the checkpoint (ours have none) the pair goes to the
    tokenizer as ``(query, document)``, which for Qwen3 is the two texts back to back, no template,
    no instruction (``base/modality.py``, ``InputFormatter.parse_inputs``).
``st-CrossEncoder (card prompt)``
    The same, loaded from a directory that holds the checkpoint's files (symbolic links, nothing in
    the model is changed) plus ``chat_template.jinja``: the template that Qwen/Qwen3-Reranker-*
    on the Hugging Face Hub ships for sentence-transformers (``QWEN3_RERANKER_TEMPLATE`` below).
    With a chat template, sentence-transformers turns a pair into messages with the roles
    ``query`` and ``document`` (``base/modality.py``, ``InputFormatter.pair_to_messages``; the
    ``message`` modality is added because the tokenizer has a template,
    ``base/modules/transformer.py``, ``Transformer.infer_modalities``) and renders them through the
    template, which lays them out as the card's prompt; ``predict(..., prompt=instruction)`` adds a
    ``system`` message (``InputFormatter.prepend_prompt_to_messages``) that the template puts in
    the ``<Instruct>:`` slot. The bench checks, untimed, that the rendered tokens equal the card's.
``TransformersEngine defaults``
    ``Reranker(TransformersEngine(model, device=..., dtype=...)).rerank_many(queries, docs)``.

Scores: each row's rep-0 scores are compared with the model card's formula (float32, one
unpadded sequence at a time: ``qwen3_rerank.diagnosis.reference.OfficialFormula``) on the card's
prompt, over the first ``--check-pairs`` pairs of each workload; on CUDA (or with ``--card-code on``)
also with the card's own code in the benchmark dtype (``official.py``, chunks of 16) over all rep-0
pairs. The ``its
prompts`` row is also compared with the formula on its own input (the bare pair), which separates
"another prompt" from "another score function".

Memory: CUDA ``torch.cuda.max_memory_allocated`` over the timed repetitions, after
``reset_peak_memory_stats`` (``peak_mem_gib`` includes the weights, ``weights_gib`` is what was
allocated before the first call). CPU: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh
process per (row, workload): ``peak_rss_gib`` is the process's high-water mark after the
workload, ``peak_rss_delta_gib`` that minus the resident size before the model was loaded (the
imports done), so: weights, tokenizers and everything scoring needed, warm-up included. The weights count in
full only there: loading maps the checkpoint, its pages come in at the first forward pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as W
from _common import Recorder, log, machine, timing

ROWS = {
    "st-its": "st-CrossEncoder (its prompts)",
    "st-card": "st-CrossEncoder (card prompt)",
    "engine": "TransformersEngine defaults",
}
INSTALL_HINT = (
    "sentence-transformers is not installed; it is not a dependency of qwen3-rerank, only of this "
    "benchmark: pip install sentence-transformers==6.0.1"
)

# The chat template of Qwen/Qwen3-Reranker-* on the Hugging Face Hub (its chat_template.jinja,
# added with the repositories' sentence-transformers support): the instruction comes from a
# "system" message (the card's default instruction when there is none), the pair from the "query"
# and "document" messages that sentence-transformers makes of a (query, document) pair. Jinja drops
# the one newline at the end of a template, so the render ends with the card's suffix exactly
# (checked against qwen3_rerank.prompts.format_pair before anything is timed).
QWEN3_RERANKER_TEMPLATE = (
    '{%- set instruction = messages | selectattr("role", "eq", "system") | map(attribute="content")'
    ' | first | default("Given a web search query, retrieve relevant passages that answer the query") -%}\n'
    '{%- set query_text = messages | selectattr("role", "eq", "query") | map(attribute="content") | first -%}\n'
    '{%- set document_text = messages | selectattr("role", "eq", "document") | map(attribute="content") | first -%}\n'
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: {{ instruction }}\n<Query>: {{ query_text }}\n"
    "<Document>: {{ document_text }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
)


def st_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("sentence-transformers")
    except Exception:  # noqa: BLE001 - not installed
        return None


def flat_pairs(queries, docs) -> list[tuple[str, str]]:
    return [(q, d) for q, ds in zip(queries, docs, strict=True) for d in ds]


def card_sequences(encoder, queries, docs) -> list[list[int]]:
    plan = encoder.plan(queries, docs, max_length=8192)
    # Every (query, document) sequence in query-major order, repeats included.
    return [list(plan.pairs[k].input_ids) for q in plan.queries for d in q.planned for k in d.sequences]


def max_diff(a, b) -> float | None:
    if not a or not b:
        return None
    n = min(len(a), len(b))
    return round(max(abs(float(x) - float(y)) for x, y in zip(a[:n], b[:n], strict=True)), 6)


# -- children ------------------------------------------------------------------------------------
def child_reference(args, wls) -> None:
    """rep-0 reference scores of every workload: the card's formula in float32 (first
    ``--check-pairs`` pairs, card prompt and bare pair) and, on CUDA, the card's code in the bench
    dtype (all pairs)."""
    import torch
    from transformers import AutoTokenizer

    from qwen3_rerank._encoding import PairEncoder
    from qwen3_rerank._scores import probability
    from qwen3_rerank._tokenizer import Qwen3Tokenizer
    from qwen3_rerank.diagnosis.reference import OfficialFormula

    encoder = PairEncoder(Qwen3Tokenizer.from_pretrained(args.model))
    hf_tok = AutoTokenizer.from_pretrained(args.model)
    inputs = {wl.name: W.make_inputs(wl, 0) for wl in wls}
    ref: dict[str, dict[str, list]] = {}
    formula = OfficialFormula(args.model, device=args.device)
    for wl in wls:
        if time.time() > args.deadline_at:
            break
        queries, docs = inputs[wl.name]
        pairs = flat_pairs(queries, docs)[: args.check_pairs]
        card = card_sequences(encoder, queries, docs)[: args.check_pairs]
        bare = [hf_tok(q, d)["input_ids"] for q, d in pairs]
        ref[wl.name] = {
            "card_ids": card,
            "bare_ids": bare,
            "card": [probability(v) for v in formula.logits(card)],
            "bare": [probability(v) for v in formula.logits(bare)],
        }
        log("reference", wl.name, len(card), "pairs")
    formula.close()
    del formula
    if args.card_code == "on" or (args.card_code == "auto" and args.device.startswith("cuda")):
        from official import OfficialReranker

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        off = OfficialReranker(args.model, dtype=getattr(torch, args.dtype), device=args.device, batch_size=16)
        for wl in wls:
            if time.time() > args.deadline_at or wl.name not in ref:
                break
            ref[wl.name]["card_code"] = [s for group in off.rerank_many(*inputs[wl.name]) for s in group]
            log("card code", wl.name)
        off.close()
    Path(args.scratch, "reference.json").write_text(json.dumps(ref))


def load_row(row: str, args, torch):
    """(score function: (queries, docs) -> flat scores, sequence lengths function, extra record fields)."""
    from qwen3_rerank import Reranker, prompts
    from qwen3_rerank._encoding import PairEncoder
    from qwen3_rerank._tokenizer import Qwen3Tokenizer

    encoder = PairEncoder(Qwen3Tokenizer.from_pretrained(args.model))
    dtype = getattr(torch, args.dtype)

    def card_lengths(queries, docs):
        return [len(s) for s in card_sequences(encoder, queries, docs)]

    if row == "engine":
        from qwen3_rerank.engines.transformers_engine import TransformersEngine

        reranker = Reranker(TransformersEngine(args.model, device=args.device, dtype=dtype))

        def run(queries, docs):
            return [r.score for rk in reranker.rerank_many(queries, docs) for r in sorted(rk, key=lambda r: r.index)]

        return run, card_lengths, {}, None

    from sentence_transformers import CrossEncoder

    path = args.model if row == "st-its" else str(Path(args.scratch, "st-card-model"))
    ce = CrossEncoder(path, device=args.device, model_kwargs={"dtype": dtype}, local_files_only=True)
    kw = {"prompt": prompts.DEFAULT_INSTRUCTION} if row == "st-card" else {}
    if row == "st-card":
        probe = ce[0].preprocess([("what is x?", "x is a letter.")], **kw)
        text = ce.tokenizer.decode(probe["input_ids"][0][probe["attention_mask"][0].bool()])
        want = prompts.format_pair("what is x?", "x is a letter.")
        if text != want:
            raise RuntimeError(f"the chat template does not render the card's prompt:\n{text!r}\n!=\n{want!r}")

    def run(queries, docs):
        # predict's defaults otherwise: batch_size=32, length-sorted batches, the model's sigmoid.
        scores = ce.predict(flat_pairs(queries, docs), show_progress_bar=False, **kw)
        return [float(s) for s in scores]

    def st_ids(pairs):
        """The token ids sentence-transformers feeds the model for each pair (unpadded)."""
        out = []
        for pair in pairs:
            f = ce[0].preprocess([pair], **kw)
            out.append(f["input_ids"][0][f["attention_mask"][0].bool()].tolist())
        return out

    def lengths(queries, docs):
        if row == "st-card":
            return card_lengths(queries, docs)
        return [len(ce.tokenizer(q, d)["input_ids"]) for q, d in flat_pairs(queries, docs)]

    return run, lengths, {"st_batch_size": 32, "sentence_transformers": st_version()}, st_ids


def child_row(args, wls) -> None:
    import resource

    import torch

    cuda = args.device.startswith("cuda")
    rec = Recorder(
        args.out,
        suite="st",
        shape=args.shape,
        machine=machine(),
        command=args.parent_command,
        device=args.device,
        dtype=args.dtype,
        load=os.getloadavg(),
    )
    label = ROWS[args.child]
    ref_path = Path(args.scratch, "reference.json")
    ref = json.loads(ref_path.read_text()) if ref_path.exists() else {}

    def rss_gib() -> float:
        """The process's high-water mark."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # KiB on Linux

    def resident_gib() -> float:
        """The resident size now (Linux)."""
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 2**20

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if not cuda:
        import transformers  # noqa: F401

        import qwen3_rerank.engines.transformers_engine  # noqa: F401 - imported before the baseline

        if args.child.startswith("st-"):
            import sentence_transformers  # noqa: F401
    before_load = resident_gib() if not cuda else None
    t0 = time.perf_counter()
    try:
        run, lengths_of, extra, st_ids = load_row(args.child, args, torch)
    except Exception as exc:  # noqa: BLE001 - a failure is a result
        rec.add(engine=label, note=f"failed to load: {type(exc).__name__}: {str(exc)[:400]}")
        raise
    sync()
    load_s = round(time.perf_counter() - t0, 2)
    weights = torch.cuda.memory_allocated() / 2**30 if cuda else None
    for wl in wls:
        base = dict(workload=wl.name, engine=label, queries=wl.queries, docs_per_query=wl.docs_per_query, **extra)
        if time.time() > args.deadline_at:
            rec.add(**base, note="skipped: time budget")
            continue
        try:
            small = (min(2, wl.queries), min(16, wl.docs_per_query)) if cuda else (1, min(2, wl.docs_per_query))
            run(*W.make_inputs(W.Workload(wl.name, *small, wl.doc_words, wl.query_words), 10_000))
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times, lengths, first = [], [], []
            for rep in range(1 if wl.name.startswith("W3") else args.reps):
                queries, docs = W.make_inputs(wl, rep)
                lengths = lengths_of(queries, docs)
                t = time.perf_counter()
                scores = run(queries, docs)
                sync()
                times.append(time.perf_counter() - t)
                if rep == 0:
                    first = scores
                if time.time() > args.deadline_at:
                    break
            fields = dict(timing(args.shape, lengths, times), load_s=load_s)
            if cuda:
                fields.update(
                    peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3), weights_gib=round(weights, 3)
                )
            else:
                fields.update(
                    peak_rss_gib=round(rss_gib(), 3),
                    rss_before_load_gib=round(before_load, 3),
                    peak_rss_delta_gib=round(rss_gib() - before_load, 3),
                    memory="ru_maxrss of a fresh process per (row, workload), minus VmRSS before loading",
                )
            r = ref.get(wl.name, {})
            fields["check_pairs"] = len(r.get("card", []))
            fields["max_score_diff_vs_card_formula"] = max_diff(first, r.get("card"))
            if "card_code" in r:
                fields[f"max_score_diff_vs_card_code_{args.dtype}"] = max_diff(first, r["card_code"])
            if args.child == "st-its":
                fields["max_score_diff_vs_formula_same_input"] = max_diff(first, r.get("bare"))
            if st_ids is not None and r:
                queries, docs = W.make_inputs(wl, 0)
                mine = st_ids(flat_pairs(queries, docs)[: len(r["card_ids"])])
                want = r["bare_ids"] if args.child == "st-its" else r["card_ids"]
                fields["token_mismatches_vs_reference_input"] = sum(a != b for a, b in zip(mine, want, strict=True))
            rec.add(**base, **fields)
        except Exception as exc:  # noqa: BLE001 - an OOM or a failure is a result; go on
            rec.add(**base, note=f"failed: {type(exc).__name__}: {str(exc)[:300]}")
            if cuda:
                torch.cuda.empty_cache()


# -- parent ----------------------------------------------------------------------------------------
def wire_card_model(model: str, scratch: str) -> None:
    """A directory with the checkpoint's files (symbolic links) plus the Hub's chat template."""
    out = Path(scratch, "st-card-model")
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(model).resolve().iterdir():
        if f.name != "chat_template.jinja" and not (out / f.name).exists():
            (out / f.name).symlink_to(f)
    (out / "chat_template.jinja").write_text(QWEN3_RERANKER_TEMPLATE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--budget", type=float, default=150, help="seconds for everything, model loads included")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (W3: 1)")
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--counts", default="", help='queries x documents: "2x8" for all, or "W1=2x8,W3=1x2"')
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--check-pairs", type=int, default=64, help="pairs per workload checked against the formula")
    ap.add_argument(
        "--card-code",
        choices=["auto", "on", "off"],
        default="auto",
        help="also compare with the card's code in --dtype (auto: on CUDA)",
    )
    ap.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--deadline-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--parent-command", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    wls = W.with_counts(args.workloads, args.counts)
    if args.child:
        if args.child == "reference":
            child_reference(args, wls)
        else:
            child_row(args, wls)
        return

    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; choose from {list(ROWS)}")
    if any(r.startswith("st-") for r in rows) and importlib.util.find_spec("sentence_transformers") is None:
        raise SystemExit(INSTALL_HINT)
    if st_version() and not st_version().startswith("6."):
        log(f"note: sentence-transformers {st_version()} installed; this benchmark was written for 6.0.1")
    deadline_at = time.time() + args.budget
    command = " ".join(sys.argv)
    with tempfile.TemporaryDirectory(prefix="bench-st-") as scratch:
        wire_card_model(args.model, scratch)
        # On the CPU the memory figure is a process's high-water mark: one process per workload.
        per_workload = not args.device.startswith("cuda")
        jobs = [("reference", [wl.name for wl in wls])]
        for row in rows:
            jobs += [(row, [wl.name]) for wl in wls] if per_workload else [(row, [wl.name for wl in wls])]
        for child, names in jobs:
            left = deadline_at - time.time()
            if left < 5:
                log(f"{child} {names}: not started, time budget spent")
                if child != "reference":
                    Recorder(args.out, suite="st", shape=args.shape, command=command).add(
                        engine=ROWS[child], workload=",".join(names), note="skipped: time budget"
                    )
                continue
            cmd = [sys.executable, os.path.abspath(__file__), *child_args(args, names)]
            cmd += ["--child", child, "--scratch", scratch, "--deadline-at", str(deadline_at)]
            cmd += ["--parent-command", command]
            log(child, names)
            try:
                rc = subprocess.run(cmd, timeout=left + 60, check=False).returncode  # noqa: S603
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                log(f"{child} {names}: rc={rc}")


def child_args(args, names: list[str]) -> list[str]:
    """The parent's options for a child, restricted to ``names`` (workload names, counts applied)."""
    base = {n.split("@")[0]: n for n in names}
    counts = ",".join(f"{k}={n.split('@')[1]}" for k, n in base.items() if "@" in n)
    return [
        "--shape", args.shape, "--model", args.model, "--out", args.out, "--device", args.device,
        "--dtype", args.dtype, "--reps", str(args.reps), "--workloads", ",".join(base), "--counts", counts,
        "--check-pairs", str(args.check_pairs), "--card-code", args.card_code,
    ]  # fmt: skip


if __name__ == "__main__":
    main()
