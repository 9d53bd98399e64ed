"""Batch reranking without Ray: the scorer, the file parts, the resumable job and ``qwen3-rerank batch``.

One :class:`BatchScorer` on the tiny model (transformers, fp32, CPU) serves the module; scores are
compared with the in-process ``Reranker.rerank_many`` on the session's engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from qwen3_rerank import Reranker
from qwen3_rerank.batch import BatchJob, BatchScorer, ResumeMismatchError, run_in_process
from qwen3_rerank.batch._files import plan_input, read_part
from qwen3_rerank.cli import main

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6
OPTIONS = {"dtype": "float32", "device": "cpu"}


def pair_rows(n: int = 23) -> list[dict]:
    rows = []
    for i in range(n):
        doc = f'document "{i}" with a quote,\nand a second line' if i % 4 == 0 else f"document number {i}"
        rows.append({"query": f"query {i % 3}", "document": doc, "id": i, "weight": i * 1.5, "tag": f"t{i % 2}"})
    return rows


def list_rows(n: int = 9) -> list[dict]:
    return [{"query": f"q {i}", "document": [f"doc {i}-{j}" for j in range(i % 4)], "qid": i} for i in range(n)]


def write(rows: list[dict], path: Path, *, row_group_size: int = 7) -> Path:
    """``rows`` as a file of the format of ``path``; in CSV a list cell is JSON text."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")  # a blank last line
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    else:
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        pcsv.write_csv(pa.Table.from_pylist(cells), path)
    return path


def read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True)).to_pylist()


@pytest.fixture(scope="module")
def scorer(tiny_model):
    s = BatchScorer("transformers", model=str(tiny_model), engine_options=OPTIONS)
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(transformers_engine):
    """In-process scores: ``pairs(rows)`` one per row, ``lists(rows)`` a list per row."""
    reranker = Reranker(transformers_engine)

    def by_index(ranking):
        return [r.score for r in sorted(ranking, key=lambda r: r.index)]

    class Ref:
        @staticmethod
        def pairs(rows):
            rankings = reranker.rerank_many([r["query"] for r in rows], [[r["document"]] for r in rows])
            return [by_index(k)[0] for k in rankings]

        @staticmethod
        def lists(rows):
            rankings = reranker.rerank_many([r["query"] for r in rows], [r["document"] for r in rows])
            return [by_index(k) for k in rankings]

    return Ref()


def close(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return abs(a - b) <= TOL


# -- the scorer ----------------------------------------------------------------------------------
def test_scorer_pairs_every_batch_kind_matches_in_process_and_keeps_columns(scorer, reference):
    rows = pair_rows(7)
    want = reference.pairs(rows)
    table = pa.Table.from_pylist(rows)
    out = scorer(table)
    assert out.column_names == [*table.column_names, "score"]
    assert out.drop_columns(["score"]).equals(table)
    assert close(out.column("score").to_pylist(), want)
    frame = table.to_pandas()
    scored = scorer(frame)
    assert list(scored.columns) == [*frame.columns, "score"] and "score" not in frame.columns  # a copy
    assert close(list(scored["score"]), want)
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
    out_dict = scorer(batch)
    assert "score" not in batch and close(out_dict["score"].tolist(), want)


def test_scorer_lists_gives_scores_and_ranks_in_document_order(scorer, reference):
    rows = list_rows()
    want = reference.lists(rows)
    out = scorer(pa.Table.from_pylist(rows)).to_pylist()
    for row, expected in zip(out, want, strict=True):
        assert close(row["score"], expected)
        best_first = sorted(range(len(expected)), key=lambda i: -expected[i])
        assert [row["rank"][i] for i in best_first] == list(range(1, len(expected) + 1))
    assert [r["qid"] for r in out] == [r["qid"] for r in rows]
    frame = scorer(pa.Table.from_pylist(rows).to_pandas())
    assert close([list(s) for s in frame["score"]], want)


def test_scorer_calls_the_engine_once_per_batch(fake_engine):
    s = BatchScorer(Reranker(fake_engine))
    s(pa.Table.from_pylist(list_rows()))
    s(pa.Table.from_pylist(pair_rows(5)))
    assert fake_engine.calls == ["score", "score"]


@pytest.mark.parametrize(
    ("rows", "kwargs", "match"),
    [
        ([{"q": "a", "document": "b"}], {}, "no column 'query'"),
        ([{"query": "a", "document": "b", "score": 1}], {}, "already has a column 'score'"),
        ([{"query": None, "document": "b"}], {}, "row 0 of the batch: column 'query' is null"),
        ([{"query": "a", "document": "b"}], {"layout": "lists"}, "not a list of documents"),
        ([{"query": "a", "document": ["b"], "rank": 1}], {}, "already has a column 'rank'"),
    ],
)
def test_scorer_refuses_bad_batches_by_name(scorer, rows, kwargs, match):
    s = BatchScorer(scorer.reranker, **kwargs)
    with pytest.raises(ValueError, match=match):
        s(pa.Table.from_pylist(rows))


def test_a_pair_table_may_keep_its_own_rank_column(scorer):
    out = scorer(pa.Table.from_pylist([{"query": "a", "document": "b", "rank": 3}]))
    assert out.column_names == ["query", "document", "rank", "score"]


# -- files in parts --------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_parts_cover_every_row_once_in_order(tmp_path, suffix):
    rows = pair_rows(23)
    plan = plan_input(write(rows, tmp_path / f"in{suffix}", row_group_size=4), part_rows=5)
    assert plan.rows == 23 and [p.rows for p in plan.parts] == [5, 5, 5, 5, 3]
    got = [r for p in reversed(plan.parts) for r in reversed(read_part(plan, p).to_pylist())][::-1]
    assert [r["id"] for r in got] == list(range(23))
    assert [r["document"] for r in got] == [r["document"] for r in rows]  # quoted newlines survive CSV


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_input_without_rows_is_refused(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"query": pa.array([], pa.string()), "document": pa.array([], pa.string())}), path)
    else:
        path.write_text("query,document\n" if suffix == ".csv" else "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no rows to score"):
        plan_input(path, part_rows=5)


def test_a_later_jsonl_row_of_another_type_is_named(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"query": "q", "document": "d", "id": i}) + "\n" for i in range(4))
                    + json.dumps({"query": "q", "document": "d", "id": "seven"}) + "\n", encoding="utf-8")  # fmt: skip
    plan = plan_input(path, part_rows=4)
    with pytest.raises(ValueError, match="rows 5-5 of .* do not parse with the column types"):
        read_part(plan, plan.parts[1])


# -- the job ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "dst"), [(".jsonl", ".parquet"), (".csv", ".jsonl"), (".parquet", ".csv")])
def test_job_every_format_matches_in_process(tmp_path, scorer, reference, src, dst):
    rows = pair_rows()
    job = BatchJob.open(write(rows, tmp_path / f"in{src}"), tmp_path / f"out{dst}", settings={}, part_rows=6)
    assert run_in_process(job, scorer, batch_size=4) == len(rows)
    out = read(tmp_path / f"out{dst}")
    assert [{k: r[k] for k in rows[0]} for r in out] == rows  # every column, every row, in order
    assert close([r["score"] for r in out], reference.pairs(rows))
    assert not (tmp_path / f"out{dst}.parts").exists()


@pytest.mark.parametrize("src", [".jsonl", ".csv", ".parquet"])
def test_job_lists_layout_every_format(tmp_path, scorer, reference, src):
    rows = list_rows()
    s = BatchScorer(scorer.reranker, layout="lists")  # a CSV cell holds the list as JSON text
    job = BatchJob.open(write(rows, tmp_path / f"in{src}"), tmp_path / "out.jsonl", settings={}, part_rows=4)
    run_in_process(job, s, batch_size=3)
    out = read(tmp_path / "out.jsonl")
    assert close([r["score"] for r in out], reference.lists(rows))
    assert [r["qid"] for r in out] == [r["qid"] for r in rows]


class _Interrupting:
    """A scorer that stops the run (as Ctrl-C would) when it is asked for its ``after``-th batch."""

    def __init__(self, scorer, after):
        self.inner, self.after, self.calls = scorer, after, 0
        self.score_column = scorer.score_column

    def score_table(self, table):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return self.inner.score_table(table)


def test_resume_scores_only_the_missing_parts_and_writes_each_row_once(tmp_path, scorer, reference):
    rows = pair_rows(20)
    src, dst = write(rows, tmp_path / "in.jsonl"), tmp_path / "out.parquet"
    settings = {"model": "tiny", "instruction": None}
    job = BatchJob.open(src, dst, settings=settings, part_rows=5)
    with pytest.raises(KeyboardInterrupt):
        run_in_process(job, _Interrupting(scorer, after=3), batch_size=5)  # parts 0 and 1 committed
    assert not dst.exists()
    again = BatchJob.open(src, dst, settings=settings, part_rows=5)
    assert [p.index for p in again.pending] == [2, 3] and again.rows_done == 10
    counting = _Interrupting(scorer, after=-1)
    run_in_process(again, counting, batch_size=5)
    assert counting.calls == 2
    out = pq.read_table(dst).to_pylist()
    assert [r["id"] for r in out] == list(range(20))
    assert close([r["score"] for r in out], reference.pairs(rows))


def test_a_resume_with_other_settings_is_refused(tmp_path, scorer):
    src, dst = write(pair_rows(10), tmp_path / "in.jsonl"), tmp_path / "out.parquet"
    job = BatchJob.open(src, dst, settings={"instruction": None}, part_rows=5)
    with pytest.raises(KeyboardInterrupt):
        run_in_process(job, _Interrupting(scorer, after=2), batch_size=5)
    with pytest.raises(ResumeMismatchError, match=r"instruction \(None then, 'other' now\).*delete that folder"):
        BatchJob.open(src, dst, settings={"instruction": "other"}, part_rows=5)
    with pytest.raises(ResumeMismatchError, match="part_rows"):
        BatchJob.open(src, dst, settings={"instruction": None}, part_rows=4)


# -- the command -----------------------------------------------------------------------------------
def cli(tiny_model, *argv):
    return main(["batch", *map(str, argv), "-m", str(tiny_model), "--dtype", "float32", "--device", "cpu"])


def test_cli_in_process_lists_to_csv_and_back(tmp_path, tiny_model, reference, capsys):
    rows = list_rows()
    assert cli(tiny_model, write(rows, tmp_path / "in.parquet"), tmp_path / "out.csv", "--progress") == 0
    err = capsys.readouterr().err
    assert "9/9 rows (100%)" in err and "pairs/s" in err and "9 rows written" in err
    out = read(tmp_path / "out.csv")
    assert close([json.loads(r["score"]) for r in out], reference.lists(rows))
    assert cli(tiny_model, tmp_path / "out.csv", tmp_path / "out.csv") == 2  # OUTPUT is INPUT
    assert cli(tiny_model, tmp_path / "in.parquet", tmp_path / "out.csv") == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli(tiny_model, tmp_path / "in.parquet", tmp_path / "out.txt") == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_cli_killed_then_run_again_resumes_with_each_row_once(tmp_path, tiny_model, reference):
    """A real SIGKILL of the command in the middle of its parts, then the same command again."""
    rows = pair_rows(60)
    src, dst = write(rows, tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "qwen3_rerank", "batch", str(src), str(dst), "-m", str(tiny_model),
            "--dtype", "float32", "--device", "cpu", "--part-rows", "4", "--batch-size", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    parts = dst.with_name(dst.name + ".parts")
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.parquet"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    done = len(list(parts.glob("part-*.parquet")))
    assert 2 <= done < 15 and not dst.exists(), "the run was not killed in the middle"
    result = subprocess.run([*argv, "--progress"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{done * 4}/60 rows" in result.stderr  # it started from the committed parts
    out = read(dst)
    assert [r["id"] for r in out] == list(range(60))
    assert close([r["score"] for r in out], reference.pairs(rows))


def test_the_public_names_are_pinned():
    import qwen3_rerank.batch as batch
    import qwen3_rerank.ray as ray_api

    assert batch.__all__ == sorted(batch.__all__) == [
        "BatchJob", "BatchScorer", "DEFAULT_PART_ROWS", "FORMATS", "LAYOUTS", "ResumeMismatchError",
        "file_format", "run_in_process",
    ]  # fmt: skip
    assert ray_api.__all__ == sorted(ray_api.__all__) == [
        "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_ONGOING_REQUESTS", "DEFAULT_MAX_RESTARTS", "app_builder", "connect",
        "disconnect", "rerank_app", "rerank_dataset", "run_on_ray",
    ]  # fmt: skip
    assert all(hasattr(ray_api, n) for n in ray_api.__all__) and all(hasattr(batch, n) for n in batch.__all__)
