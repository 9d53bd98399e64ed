"""Reranking on a local Ray (started once per session): Ray Data parity, file jobs, a killed worker.

The tiny model on the transformers engine, fp32 on CPU; scores are compared with the in-process
``Reranker.rerank_many`` (the ``reference`` fixture of test_batch.py, rebuilt here).
"""

from __future__ import annotations

import os
import signal
import time

import pyarrow.parquet as pq
import pytest

from qwen3_rerank import ConfigurationError, Reranker
from qwen3_rerank.batch import BatchJob, BatchScorer, run_in_process
from qwen3_rerank.cli import main
from tests.test_batch import OPTIONS, _Interrupting, close, list_rows, pair_rows, read, write

pytestmark = pytest.mark.ray

POOL = {"concurrency": 2, "num_cpus": 0.5}


@pytest.fixture(scope="module")
def reference(transformers_engine):
    reranker = Reranker(transformers_engine)

    def scores(rows, lists):
        docs = [r["document"] if lists else [r["document"]] for r in rows]
        rankings = reranker.rerank_many([r["query"] for r in rows], docs)
        out = [[r.score for r in sorted(k, key=lambda r: r.index)] for k in rankings]
        return out if lists else [s[0] for s in out]

    return scores


def options(tiny_model):
    return {"model": str(tiny_model), "engine_options": OPTIONS}


def test_rerank_dataset_pairs_match_in_process_and_keep_columns(ray_cluster, tiny_model, reference):
    from qwen3_rerank.ray import rerank_dataset

    rows = pair_rows(24)
    ds = ray_cluster.data.from_items(rows, override_num_blocks=4)  # tiny inputs are one block otherwise
    out = sorted(rerank_dataset(ds, **options(tiny_model), **POOL, batch_size=5).take_all(), key=lambda r: r["id"])
    assert [{k: r[k] for k in rows[0]} for r in out] == rows
    assert close([r["score"] for r in out], reference(rows, lists=False))


def test_rerank_dataset_lists_give_scores_and_ranks(ray_cluster, tiny_model, reference):
    from qwen3_rerank.ray import rerank_dataset

    rows = list_rows(10)
    ds = ray_cluster.data.from_items(rows, override_num_blocks=3)
    out = sorted(
        rerank_dataset(ds, **options(tiny_model), **POOL, batch_size=3, score_column="s", rank_column="r").take_all(),
        key=lambda r: r["qid"],
    )
    want = reference(rows, lists=True)
    assert close([list(r["s"]) for r in out], want)
    for row, expected in zip(out, want, strict=True):
        assert sorted(row["r"], key=lambda k: -expected[list(row["r"]).index(k)]) == sorted(row["r"])
        assert [str(d) for d in row["document"]] == rows[row["qid"]]["document"]


def test_rerank_dataset_checks_its_options_before_any_actor_starts(ray_cluster, tiny_model):
    from qwen3_rerank.ray import rerank_dataset

    ds = ray_cluster.data.from_items([{"query": "q", "document": "d"}])
    with pytest.raises(ConfigurationError, match="did you mean 'dtype'"):
        rerank_dataset(ds, model=str(tiny_model), engine_options={"dtyp": "float32"})
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        rerank_dataset(ds, model=str(tiny_model), concurrency=0)


def test_cli_workers_on_ray_every_format(ray_cluster, tiny_model, tmp_path, reference, capsys):
    rows = pair_rows(22)
    want = reference(rows, lists=False)
    # CSV comes in through test_resume_on_ray_after_an_interrupted_in_process_run (a new actor pool
    # costs ~20 s here: the formats are shared between the tests rather than crossed).
    for src, dst in ((".parquet", ".jsonl"), (".jsonl", ".csv")):
        argv = ["batch", write(rows, tmp_path / f"in{src}"), tmp_path / f"out{dst}", "-m", tiny_model,
                "--dtype", "float32", "--device", "cpu", "--workers", "2", "--cpus-per-worker", "0.5",
                "--part-rows", "5", "--batch-size", "3", "--progress"]  # fmt: skip
        assert main([str(a) for a in argv]) == 0
        assert "22/22 rows (100%)" in capsys.readouterr().err
        out = read(tmp_path / f"out{dst}")
        assert [{k: r[k] for k in rows[0]} for r in out] == rows, (src, dst)
        assert close([r["score"] for r in out], want)
    assert ray_cluster.is_initialized()  # the command used the session's Ray and left it running


def test_resume_on_ray_after_an_interrupted_in_process_run(ray_cluster, tiny_model, tmp_path, reference):
    from qwen3_rerank.ray import run_on_ray

    rows = list_rows(12)
    src, dst = write(rows, tmp_path / "in.csv"), tmp_path / "out.parquet"  # the lists as JSON cells
    settings = {"model": "tiny"}
    scorer = BatchScorer("transformers", **options(tiny_model), layout="lists")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_process(
                BatchJob.open(src, dst, settings=settings, part_rows=3), _Interrupting(scorer, 3), batch_size=3
            )
    finally:
        scorer.close()
    job = BatchJob.open(src, dst, settings=settings, part_rows=3)
    assert [p.index for p in job.pending] == [2, 3]
    assert run_on_ray(job, {**options(tiny_model), "layout": "lists"}, workers=2, num_cpus=0.5, batch_size=2) == 12
    out = pq.read_table(dst).to_pylist()
    assert [r["qid"] for r in out] == list(range(12))
    assert close([r["score"] for r in out], reference(rows, lists=True))


def _scoring_actors():
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::") and "BatchScorer" in cmdline:
            found.append(proc)
    return found


def test_a_killed_worker_loses_and_duplicates_no_row(ray_cluster, tiny_model, reference):
    """SIGKILL one scoring actor's process mid-job: Ray restarts it and retries its batch."""
    from qwen3_rerank.ray import rerank_dataset

    rows = pair_rows(96)
    ds = ray_cluster.data.from_items(rows, override_num_blocks=24)
    scored = rerank_dataset(ds, **options(tiny_model), **POOL, batch_size=2)
    got, killed, after_kill = [], None, 0
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        got.extend(batch.to_pylist())
        if killed is None:
            actors = _scoring_actors()
            assert actors, "no scoring actor process found"
            killed = actors[0]
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait(timeout=30)
        else:
            after_kill += 1
    assert after_kill > 0, "the job ended before the kill could interrupt it"
    got.sort(key=lambda r: r["id"])
    assert [r["id"] for r in got] == list(range(96))  # each row exactly once
    assert close([r["score"] for r in got], reference(rows, lists=False))
    deadline = time.monotonic() + 30
    while not _scoring_actors() and time.monotonic() < deadline:  # pragma: no cover - timing
        time.sleep(0.1)
