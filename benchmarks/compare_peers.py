"""How peer libraries score a Qwen3-Reranker checkpoint, next to this library, on the same weights.

    python benchmarks/compare_peers.py                 # the tiny offline test model (random weights)
    python benchmarks/compare_peers.py --model DIR     # any local original Qwen3-Reranker checkpoint
    python benchmarks/compare_peers.py --json out.json

Needs ``qwen3-rerank[torch,testing]`` and, for the peer rows, ``sentence-transformers`` and
``rerankers`` (rows of a library that is not installed are reported as skipped). Everything runs
on the CPU in float32, offline. Rows:

* ``model card``: the model card's formula (``softmax([logit("no"), logit("yes")])[1]`` at the last
  position of the model card's prompt), computed the slow way by
  ``qwen3_rerank.testing.reference_scores``; the yardstick.
* ``qwen3-rerank``: ``Reranker("transformers")`` with its defaults.
* ``sentence-transformers CrossEncoder.rank``: ``CrossEncoder(model).rank(query, documents)``, the
  documented call, nothing else configured.
* ``sentence-transformers, model card prompt built by hand``: ``CrossEncoder.predict`` on
  ``(SYSTEM_PREFIX + format_query(query), format_document(document) + ASSISTANT_SUFFIX)`` pairs
  (the prompt strings of ``qwen3_rerank.prompts``, split as the vLLM-Ascend tutorial splits them):
  what a user must write to get the model card's scores out of it.
* ``rerankers Reranker(model_type="cross-encoder")``: AnswerDotAI ``rerankers``' generic
  cross-encoder path, which loads the checkpoint with ``AutoModelForSequenceClassification``
  (a score head the checkpoint does not have is initialised at random, so its numbers change from
  one load to the next; the row shows what ``rank`` returns).

The random weights make every order meaningless: what the rows show is whether a library computes
the model card's numbers on the same weights (``max |diff|`` against the first row).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

QUERY = "What is the capital of China?"
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Shanghai is China's largest city.",
]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _model_card(model: str) -> list[float]:
    from tokenizers import Tokenizer

    from qwen3_rerank.prompts import format_pair
    from qwen3_rerank.testing import reference_scores

    # The prompt strings hold no user text that could become a control token here, so the full
    # tokenizer gives the model card's ids (the library's own encoder is tested to give the same).
    tokenizer = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    ids = [tokenizer.encode(format_pair(QUERY, d), add_special_tokens=False).ids for d in DOCUMENTS]
    return reference_scores(model, ids)


def _qwen3_rerank(model: str) -> list[float]:
    from qwen3_rerank import Reranker

    with Reranker("transformers", model=model, device="cpu", dtype="float32") as reranker:
        ranking = reranker.rerank(QUERY, DOCUMENTS)
    by_index = {r.index: r.score for r in ranking}
    return [by_index[i] for i in range(len(DOCUMENTS))]


def _st_rank(model: str) -> list[float]:
    from sentence_transformers import CrossEncoder

    ranks = CrossEncoder(model, device="cpu").rank(QUERY, DOCUMENTS)
    by_index = {r["corpus_id"]: float(r["score"]) for r in ranks}
    return [by_index[i] for i in range(len(DOCUMENTS))]


def _st_hand_prompt(model: str) -> list[float]:
    from sentence_transformers import CrossEncoder

    from qwen3_rerank.prompts import ASSISTANT_SUFFIX, SYSTEM_PREFIX, format_document, format_query

    pairs = [(SYSTEM_PREFIX + format_query(QUERY), format_document(d) + ASSISTANT_SUFFIX) for d in DOCUMENTS]
    return [float(s) for s in CrossEncoder(model, device="cpu").predict(pairs)]


def _rerankers(model: str) -> list[float]:
    from rerankers import Reranker as PeerReranker

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its loading messages
        ranker = PeerReranker(model, model_type="cross-encoder", device="cpu", dtype="float32", verbose=0)
        results = ranker.rank(QUERY, DOCUMENTS)
    by_index = {r.document.doc_id: r.score for r in results.results}
    scores = [by_index[i] for i in range(len(DOCUMENTS))]
    if not all(isinstance(s, float) for s in scores):
        raise TypeError(f"rank() returned scores that are not one number per document: {scores}")
    return scores


ROWS: list[tuple[str, str | None, Callable[[str], list[float]]]] = [
    ("model card formula (reference)", None, _model_card),
    ("qwen3-rerank Reranker('transformers')", "qwen3-rerank", _qwen3_rerank),
    ("sentence-transformers CrossEncoder.rank", "sentence-transformers", _st_rank),
    ("sentence-transformers, model card prompt built by hand", "sentence-transformers", _st_hand_prompt),
    ("rerankers Reranker(model_type='cross-encoder')", "rerankers", _rerankers),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local original Qwen3-Reranker checkpoint (default: the tiny test model)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.model is None:
        from qwen3_rerank.testing import cached_test_model

        args.model = str(cached_test_model())
    rows = []
    reference: list[float] | None = None
    for name, dist, run in ROWS:
        version = _version(dist) if dist else None
        if dist and version is None:
            rows.append({"row": name, "skipped": f"{dist} is not installed"})
            continue
        try:
            scores = run(args.model)
        except Exception as exc:  # a peer that cannot load the checkpoint is a result too
            rows.append({"row": name, "version": version, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        reference = reference if reference is not None else scores
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        diff = max(abs(a - b) for a, b in zip(scores, reference, strict=True))
        rows.append({"row": name, "version": version, "scores": scores, "order": order, "max_abs_diff": diff})
    print(f"model: {args.model}; python {platform.python_version()}, torch {_version('torch')}, "
          f"transformers {_version('transformers')}")  # fmt: skip
    print(f"query: {QUERY!r}; documents: {DOCUMENTS}")
    for row in rows:
        if "scores" in row:
            scores = ", ".join(f"{s:.6f}" for s in row["scores"])
            print(f"{row['row']} ({row['version']}): scores [{scores}] order {row['order']} "
                  f"max |diff| vs model card {row['max_abs_diff']:.2e}")  # fmt: skip
        else:
            print(f"{row['row']}: {row.get('skipped') or row.get('error')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
