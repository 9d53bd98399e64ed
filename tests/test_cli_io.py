"""The CLI's input and output edges: line splitting, bounded reads, echoed fields, streaming, formats, progress.

In-process runs on the tiny model's session engine (``reuse_engine`` from ``tests/test_cli.py``).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from qwen3_rerank.cli import _engine as cli_engine
from qwen3_rerank.cli import _inputs, main
from tests.test_cli import DOCS, QUERY, _Borrowed, _offline, assert_one_line_error, reuse_engine, run

__all__ = ["_offline", "reuse_engine"]  # fixtures used by name


# -- issue 25 item 1: lines end at \n (and \r\n) only ------------------------------------------
ODD_BREAKS = "\f\v\x1c\x1d\x1e\x85\u2028\u2029\r"


def test_documents_are_split_only_at_newlines(reuse_engine, capsys, tmp_path, tiny_model):
    docs = ["page one\fpage two", "a\vb\x1cc\x1dd\x1ee", "NEL\x85 LS\u2028 PS\u2029 lone CR\r inside"]
    path = tmp_path / "docs.txt"
    path.write_bytes(("\n".join(docs[:2]) + "\n" + docs[2] + "\r\n").encode("utf-8"))
    code, out, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model, "--json"], capsys)
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 3  # str.splitlines() made 10 documents of these 3
    assert {r["index"]: r["text"] for r in results} == dict(enumerate(docs))


def test_a_jsonl_line_with_a_raw_line_separator_is_one_document(reuse_engine, capsys, tmp_path, tiny_model):
    path = tmp_path / "docs.jsonl"
    texts = ["one\u2028two", "three\fpage", "plain"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # raw, not escaped
    code, out, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model, "--json"], capsys)
    assert code == 0, err
    assert sorted(r["text"] for r in json.loads(out)["results"]) == sorted(texts)


def test_queries_are_split_only_at_newlines(reuse_engine, capsys, tmp_path, tiny_model, monkeypatch):
    queries = "first\fquery\r\nsecond\u2028query\n"
    code, out, err = run(
        ["rerank", "--queries", "-", "--docs", _docs(tmp_path), "-m", tiny_model, "--jsonl"],
        capsys,
        stdin=queries,
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    assert {json.loads(line)["query"] for line in out.splitlines()} == {"first\fquery", "second\u2028query"}


def _docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


# -- item 12: a bounded reader -----------------------------------------------------------------
def test_an_endless_docs_file_is_refused(capsys, monkeypatch, tiny_model):
    monkeypatch.setattr(_inputs, "MAX_INPUT_BYTES", 1 << 20)  # 1 MiB instead of 1 GiB: the same code path
    code, _, err = run(["rerank", QUERY, "--docs", "/dev/zero", "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "/dev/zero", "more than 1,048,576 bytes", "never ends", expected_code=2)


def test_too_much_stdin_is_refused(capsys, monkeypatch, tiny_model):
    monkeypatch.setattr(_inputs, "MAX_INPUT_BYTES", 1000)
    code, _, err = run(
        ["rerank", QUERY, "--docs", "-", "-m", tiny_model], capsys, stdin="doc\n" * 300, monkeypatch=monkeypatch
    )
    assert_one_line_error(code, err, "stdin holds more than 1,000 bytes", expected_code=2)


def test_binary_stdin_is_read_as_utf8_within_the_bound(reuse_engine, capsys, monkeypatch, tiny_model):
    raw = io.TextIOWrapper(io.BytesIO("Beijing \u2028 capital\nParis\n".encode()), encoding="latin-1")
    monkeypatch.setattr(sys, "stdin", raw)  # the bytes are decoded as UTF-8 whatever the locale says
    code, out, err = run(["rerank", QUERY, "--docs", "-", "-m", tiny_model, "--json"], capsys)
    assert code == 0, err
    assert sorted(r["text"] for r in json.loads(out)["results"]) == ["Beijing \u2028 capital", "Paris"]


# -- item 25: everything the user gave comes back; streamed; explicit empties --------------------
def test_jsonl_fields_other_than_id_are_echoed(reuse_engine, capsys, tmp_path, tiny_model):
    docs = tmp_path / "docs.jsonl"
    rows = [
        {"id": "d0", "text": DOCS[0], "title": "China", "score": 12.5, "meta": {"tags": ["geo", 1]}},
        {"text": DOCS[1], "source": "bio"},
        {"id": 7, "text": DOCS[2]},
    ]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run(["rerank", QUERY, "--docs", docs, "-m", tiny_model, "--jsonl"], capsys)
    assert code == 0, err
    by_index = {rec["index"]: rec for rec in map(json.loads, out.splitlines())}
    assert by_index[0]["fields"] == {"title": "China", "score": 12.5, "meta": {"tags": ["geo", 1]}}
    assert by_index[0]["id"] == "d0" and 0 <= by_index[0]["score"] <= 1  # the user's "score" did not replace ours
    assert by_index[1]["fields"] == {"source": "bio"} and "id" not in by_index[1]
    assert "fields" not in by_index[2] and by_index[2]["id"] == 7

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query": QUERY, "id": "q", "lang": "en", "documents": rows}) + "\n")
    code, out, err = run(["rerank", "--queries", queries, "-m", tiny_model, "--json"], capsys)
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["id"] == "q" and record["fields"] == {"lang": "en"}
    assert {r["index"]: r.get("fields") for r in record["results"]}[1] == {"source": "bio"}


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "table"])
def test_a_query_without_documents_gets_an_explicit_empty_result(reuse_engine, capsys, tmp_path, tiny_model, fmt):
    queries = tmp_path / "queries.jsonl"
    rows = [{"query": "nothing", "documents": []}, {"query": "fruit", "documents": ["apple", "pear"]}]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = ["rerank", "--queries", queries, "-m", tiny_model] + ([] if fmt == "table" else [fmt])
    code, out, err = run(argv, capsys)
    assert code == 0, err
    if fmt == "--json":
        first, second = json.loads(out)
        assert first["results"] == [] and first["empty"] == "the query has no documents"
        assert len(second["results"]) == 2 and "empty" not in second
    elif fmt == "--jsonl":
        first = json.loads(out.splitlines()[0])
        assert first["query"] == "nothing" and first["index"] is None and first["empty"] == "the query has no documents"
    else:
        assert "(no results: the query has no documents)" in out


class _Stdout(io.StringIO):
    """Records how many engine calls had been made when each write happened."""

    def __init__(self, calls: list[int]) -> None:
        super().__init__()
        self.calls, self.seen = calls, []

    def write(self, text: str) -> int:
        self.seen.append((len(self.calls), text))
        return super().write(text)


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "table"])
def test_queries_output_is_streamed_query_by_query(monkeypatch, capsys, tmp_path, tiny_model, transformers_engine, fmt):
    calls: list[int] = []

    class Counting(_Borrowed):
        def score(self, pairs):
            calls.append(len(pairs))
            return super().score(pairs)

    monkeypatch.setattr(cli_engine, "build_engine", lambda args: Counting(transformers_engine))
    stdout = _Stdout(calls)
    monkeypatch.setattr(sys, "stdout", stdout)
    queries = tmp_path / "q.txt"
    queries.write_text("capital of China\nOlympic games\nFrench capital\n", encoding="utf-8")
    argv = ["rerank", "--queries", queries, "--docs", _docs(tmp_path), "-m", tiny_model, "--chunk-size", "4"]
    code = main([str(a) for a in argv + ([] if fmt == "table" else [fmt])])
    assert code == 0, capsys.readouterr().err
    assert len(calls) == 3  # one engine call per query (4 documents each)
    first_query = next(n for n, text in stdout.seen if "capital of China" in text)
    assert first_query == 1  # written after the first call, before the second
    if fmt == "--json":
        assert [r["query"] for r in json.loads(stdout.getvalue())] == [
            "capital of China",
            "Olympic games",
            "French capital",
        ]


# -- item 27: TREC run files and TSV -----------------------------------------------------------
def _id_files(tmp_path: Path) -> Path:
    queries = tmp_path / "queries.jsonl"
    docs = [{"id": f"doc-{i}", "text": d} for i, d in enumerate(DOCS)]
    rows = [{"id": "q1", "query": QUERY, "documents": docs}, {"id": 2, "query": "Olympics", "documents": docs[:2]}]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return queries


def test_format_trec_is_a_trec_run_file(reuse_engine, capsys, tmp_path, tiny_model):
    queries = _id_files(tmp_path)
    code, out, err = run(
        ["rerank", "--queries", queries, "-m", tiny_model, "--format", "trec", "--run-tag", "t1"], capsys
    )
    assert code == 0, err
    code, ref, _ = run(["rerank", "--queries", queries, "-m", tiny_model, "--jsonl"], capsys)
    expected = [json.loads(line) for line in ref.splitlines()]
    rows = [line.split(" ") for line in out.splitlines()]
    assert [len(r) for r in rows] == [6] * 6
    assert [(r[0], r[1], r[2], int(r[3]), float(r[4]), r[5]) for r in rows] == [
        (str(e["query_id"]), "Q0", e["id"], e["rank"], e["score"], "t1") for e in expected
    ]


def test_format_tsv_and_positions_when_there_are_no_ids(reuse_engine, capsys, tmp_path, tiny_model):
    code, out, err = run(["rerank", QUERY, "--docs", _docs(tmp_path), "-m", tiny_model, "--format", "tsv"], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0"] * len(DOCS)
    assert sorted(r[1] for r in rows) == [str(i) for i in range(len(DOCS))]
    assert [int(r[2]) for r in rows] == [1, 2, 3, 4]
    scores = [float(r[3]) for r in rows]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("fmt", "doc_id", "fragment"),
    [("trec", "doc 1", "holds whitespace"), ("tsv", "a\tb", "holds a tab"), ("trec", ["x"], "is a list")],
)
def test_ids_that_would_shift_columns_are_refused_before_the_model_loads(capsys, tmp_path, fmt, doc_id, fragment):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": doc_id, "text": "x"}) + "\n", encoding="utf-8")
    # A model path that does not exist: the error must come before any engine is built.
    code, _, err = run(["rerank", QUERY, "--docs", docs, "-m", tmp_path, "--format", fmt], capsys)
    assert_one_line_error(code, err, f"--format {fmt}", "document 0 of query 0", fragment, expected_code=2)


def test_json_and_jsonl_flags_still_work_and_exclude_format(capsys, tmp_path, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", _docs(tmp_path), "--json", "--format", "tsv"], capsys)
    assert_one_line_error(code, err, "not allowed with argument", expected_code=2)


# -- item 24: progress by pairs for one query with many documents --------------------------------
def test_one_query_with_many_documents_shows_progress_by_pairs(reuse_engine, capsys, tmp_path, tiny_model):
    docs = _docs(tmp_path)
    base = ["rerank", QUERY, "--docs", docs, "-m", tiny_model, "--json"]
    code, out, err = run([*base, "--progress", "--chunk-size", "3"], capsys)
    assert code == 0, err
    assert "4/4" in err and "pairs" in err
    split = json.loads(out)
    code, whole_out, _ = run([*base, "--no-progress"], capsys)
    whole = json.loads(whole_out)
    # Scored in two calls (3 + 1 documents) and merged: the same ranking as one call.
    assert [r["index"] for r in split["results"]] == [r["index"] for r in whole["results"]]
    assert [r["score"] for r in split["results"]] == pytest.approx([r["score"] for r in whole["results"]], abs=1e-6)
    assert split["stats"]["pairs"] == whole["stats"]["pairs"] == 4
    # top_n and the threshold apply to the merged ranking, not to each call.
    code, out, _ = run([*base, "--chunk-size", "1", "--top-n", "2"], capsys)
    assert [r["index"] for r in json.loads(out)["results"]] == [r["index"] for r in whole["results"]][:2]
    cut = (whole["results"][1]["score"] + whole["results"][2]["score"]) / 2
    code, out, _ = run([*base, "--chunk-size", "2", "--threshold", str(cut)], capsys)
    assert [r["index"] for r in json.loads(out)["results"]] == [r["index"] for r in whole["results"]][:2]


def test_the_hand_drawn_progress_bar_is_gone():
    from qwen3_rerank.cli import rerank

    assert not hasattr(rerank, "_Progress")
    assert "importlib" not in Path(rerank.__file__).read_text(encoding="utf-8")
