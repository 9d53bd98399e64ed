"""What other clients of a vLLM server get (:mod:`qwen3_rerank.diagnosis.clients`), against fakes.

Each fake server answers ``/rerank``, ``/v1/rerank``, ``/score`` and ``/tokenize`` in vLLM 0.32's
shapes and scores, with the float32 embedded engine on the tiny model, the prompt IT renders: the
model card's, the bare query and document (no template), or a Jinja template rendered as vLLM
renders one (tests/data/qwen3_reranker_template.jinja, which renders the same tokens as vLLM's
example). The expected differences are computed here from the prompts, independently of the
module under test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen3_rerank import prompts
from qwen3_rerank._scores import probability
from qwen3_rerank.diagnosis import CHECK_CASES, CheckReport, format_check_report, run_check
from qwen3_rerank.diagnosis.clients import (
    CLIENT_CASES,
    ENDPOINTS,
    ClientsReport,
    check_other_clients,
    explain_scores,
)
from qwen3_rerank.engines.remote import RemoteEngine

TEMPLATE = Path(__file__).parent / "data" / "qwen3_reranker_template.jinja"
CASES = [c for c in CHECK_CASES if c.name in CLIENT_CASES]
Render = Callable[[str, str], str]


def jinja(template: str) -> Render:
    """Render ``template`` as vLLM does (transformers' sandboxed Jinja environment, its flags)."""
    sandbox = pytest.importorskip("jinja2.sandbox")
    compiled = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

    def render(query: str, document: str) -> str:
        messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
        return str(compiled.render(messages=messages))

    return render


def card(query: str, document: str) -> str:
    return prompts.format_pair(query, document)


def bare(query: str, document: str) -> str:
    return query + document


class FakeServer:
    """vLLM 0.32's raw-text endpoints, scoring the prompts ``render`` writes."""

    def __init__(
        self, reference: Any, render: Render, *, offered: tuple[str, ...] = (*ENDPOINTS, "/tokenize"), chat: bool = True
    ) -> None:
        self.reference, self.render, self.offered, self.chat = reference, render, offered, chat
        self.seen: list[str] = []

    def ids(self, query: str, document: str) -> list[int]:
        ids: list[int] = self.reference.tokenizer.encode_template(self.render(query, document))
        return ids

    def scores(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        seqs = [self.ids(query, d) for d in documents]
        return [probability(v) for v in self.reference.logits(seqs)], sum(len(s) for s in seqs)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.seen.append(path)
        if path not in self.offered:
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        if path == "/tokenize":
            if not self.chat:  # vLLM without a chat template anywhere
                return httpx.Response(400, json={"error": {"message": "no chat template", "code": 400}})
            messages = {m["role"]: m["content"] for m in body["messages"]}
            tokens = self.ids(messages["query"], messages["document"])
            return httpx.Response(200, json={"count": len(tokens), "max_model_len": 2048, "tokens": tokens})
        if path == "/score":
            scores, used = self.scores(body["text_1"], body["text_2"])
            data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
            return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": used, "total_tokens": used}})
        scores, used = self.scores(body["query"], body["documents"])
        results = [
            {"index": i, "document": {"text": body["documents"][i]}, "relevance_score": s}
            for i, s in sorted(enumerate(scores), key=lambda x: -x[1])  # best first, as vLLM answers
        ]
        return httpx.Response(200, json={"results": results, "usage": {"prompt_tokens": used, "total_tokens": used}})


@pytest.fixture
def ask(tiny_model: Path, transformers_engine: Any) -> Iterator[Callable[..., ClientsReport]]:
    engines: list[RemoteEngine] = []

    def run(server: Any, tolerance: float = 1e-4) -> ClientsReport:
        engine = RemoteEngine(
            "http://fake:8000", model=str(tiny_model), transport=httpx.MockTransport(server), max_retries=0
        )
        engines.append(engine)
        report = check_other_clients(engine, transformers_engine, tolerance=tolerance)
        assert report is not None
        return report

    yield run
    for engine in engines:
        engine.close()


def expected_max_diff(reference: Any, render: Render) -> float:
    """max |P(what the server scores) - P(the model card's prompt)| over the raw cases, from the prompts."""
    tok = reference.tokenizer
    served = reference.logits([tok.encode_template(render(c.query, c.document)) for c in CASES])
    model_card = reference.logits([tok.encode_template(card(c.query, c.document)) for c in CASES])
    return max(abs(probability(a) - probability(b)) for a, b in zip(served, model_card, strict=True))


def test_vllm_example_template_is_named_with_its_tokens(ask, transformers_engine):
    render = jinja(TEMPLATE.read_text())
    assert render("q", "d").endswith("</think>\n") and not render("q", "d").endswith("\n\n")  # Jinja drops one
    expected = expected_max_diff(transformers_engine, render)
    assert expected > 1e-3  # the two prompts really score differently

    report = ask(FakeServer(transformers_engine, render))

    assert [e.endpoint for e in report.endpoints] == list(ENDPOINTS)
    for e in report.endpoints:
        assert e.offered and e.renders_as == "one_newline"
        assert e.max_diff == pytest.approx(expected, abs=1e-7)
        assert e.prompt_tokens == e.model_card_tokens  # same count: invisible to usage.prompt_tokens
    assert report.max_diff == pytest.approx(expected, abs=1e-7)
    assert f"off by up to {expected:.3g}" in report.verdict
    tok = report.tokenize
    assert tok is not None and tok["used"] and tok["matches"] == "one_newline"
    assert tok["tail"][-1] == 198 and tok["model_card_tail"][-1] == 271
    assert tok["tail"][:-1] == tok["model_card_tail"][:-1]
    assert report.cause is not None and "token 198" in report.cause
    assert "measured with the server's /tokenize" in report.cause
    assert report.fix is not None and "three newlines" in report.fix and "/classify" in report.fix


def test_a_template_ending_with_one_more_newline_matches_the_model_card(ask, transformers_engine):
    report = ask(FakeServer(transformers_engine, jinja(TEMPLATE.read_text() + "\n")))

    assert {e.renders_as for e in report.endpoints} == {"model_card"}
    assert report.max_diff is not None and report.max_diff < 1e-6
    assert "get the model card's scores" in report.verdict
    assert report.cause is None and report.fix is None
    assert report.tokenize is not None and report.tokenize["matches"] == "model_card"


def test_no_template_scores_the_bare_text(ask, transformers_engine):
    expected = expected_max_diff(transformers_engine, bare)
    report = ask(FakeServer(transformers_engine, bare, chat=False))

    for e in report.endpoints:
        assert e.renders_as == "bare"
        assert e.max_diff == pytest.approx(expected, abs=1e-7)
        assert e.prompt_tokens is not None and e.model_card_tokens is not None
        assert e.prompt_tokens < e.model_card_tokens
    assert f"off by up to {expected:.3g}" in report.verdict
    assert report.cause is not None and "without --chat-template" in report.cause
    assert report.tokenize is not None and report.tokenize["status"] == 400 and not report.tokenize["used"]


def test_a_chat_template_that_is_not_the_scoring_prompt_is_not_taken_as_evidence(ask, transformers_engine):
    # A real checkpoint's tokenizer has a chat template; /tokenize renders with it while /score
    # (no --chat-template) scores bare text: another token count, so it is not the scoring prompt.
    server = FakeServer(transformers_engine, bare)
    chat = jinja(TEMPLATE.read_text())
    server.ids = lambda q, d: transformers_engine.tokenizer.encode_template(  # type: ignore[method-assign]
        chat(q, d) if server.seen[-1] == "/tokenize" else bare(q, d)
    )
    report = ask(server)
    assert report.tokenize is not None and report.tokenize["tokens"] != report.tokenize["score_tokens"]
    assert not report.tokenize["used"]
    assert report.cause is not None and "measured" not in report.cause and "bare" in report.cause


def test_an_unknown_rendering_is_not_explained(ask, transformers_engine):
    def other(query: str, document: str) -> str:
        return prompts.format_pair(query, document, "Find documents in French")

    report = ask(FakeServer(transformers_engine, other))
    assert {e.renders_as for e in report.endpoints} == {None}
    assert report.max_diff == pytest.approx(expected_max_diff(transformers_engine, other), abs=1e-7)
    assert report.cause is not None and "none of the known renderings" in report.cause


def test_endpoints_a_server_lacks_are_reported_not_fatal(ask, transformers_engine):
    report = ask(FakeServer(transformers_engine, card, offered=("/score",)))
    by_path = {e.endpoint: e for e in report.endpoints}
    for path in ("/rerank", "/v1/rerank"):
        assert not by_path[path].offered and by_path[path].status == 404 and by_path[path].scores is None
    assert by_path["/score"].renders_as == "model_card"
    assert "(raw query and documents to /score)" in report.verdict
    assert report.tokenize is not None and report.tokenize["status"] == 404

    nothing = ask(FakeServer(transformers_engine, card, offered=()))
    assert nothing.max_diff is None and "offers none of /rerank, /v1/rerank, /score" in nothing.verdict


def test_an_unreachable_server_is_a_note(ask):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    report = ask(refuse)
    assert all(not e.offered and e.note and e.note.startswith("no answer") for e in report.endpoints)
    assert "offers none" in report.verdict


def test_an_answer_in_another_shape_is_reported(ask, transformers_engine):
    def odd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"scores": [0.5]})

    report = ask(odd)
    assert all(e.offered and e.scores is None and "not a" in (e.note or "") for e in report.endpoints)


def test_explain_scores_needs_a_clear_winner():
    hyps = {"model_card": [0.50, 0.60], "one_newline": [0.52, 0.61], "bare": [0.40, 0.70]}
    assert explain_scores([0.52, 0.61], hyps, 1e-4) == "one_newline"
    assert explain_scores([0.50, 0.60], hyps, 1e-4) == "model_card"
    assert explain_scores([0.51, 0.605], hyps, 0.03) is None  # halfway: neither is 4x closer
    assert explain_scores([0.30, 0.90], hyps, 1e-4) is None  # nothing within the tolerance
    assert explain_scores([0.5], {"a": [0.5], "b": [0.5]}, 1e-4) is None  # indistinguishable


def test_only_a_remote_engine_gets_the_section(transformers_engine):
    report = run_check(transformers_engine, transformers_engine)
    assert report.clients is None and report.to_dict()["other_clients"] is None


def test_the_section_is_in_the_json_and_the_text(ask, transformers_engine):
    clients = ask(FakeServer(transformers_engine, bare, chat=False))
    report = CheckReport(passed=True, engine="remote", clients=clients)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["other_clients"]["verdict"] == clients.verdict
    assert [e["renders_as"] for e in data["other_clients"]["endpoints"]] == ["bare"] * 3
    text = format_check_report(report)
    assert "other clients of this server" in text and clients.verdict in text
    assert "scores the bare query and document" in text


def _imported_modules(path: Any, package: str) -> set[str]:
    """Absolute names of the ``qwen3_rerank`` modules a source file imports (at any level)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = package.split(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_check_is_one_package_without_an_import_circle() -> None:
    """diagnosis/: _cases <- reference, clients <- _check <- __init__; nothing imports back up."""

    import qwen3_rerank

    src = Path(qwen3_rerank.__file__).parent
    folder = src / "diagnosis"
    assert sorted(p.name for p in folder.glob("*.py")) == [
        "__init__.py",
        "_cases.py",
        "_check.py",
        "clients.py",
        "reference.py",
    ]
    for old in ("diagnosis.py", "diagnosis_clients.py", "reference.py", "_serve.py"):
        assert not (src / old).exists(), old
    layer = {"_cases": 0, "reference": 1, "clients": 1, "_check": 2, "__init__": 3}
    for name, level in layer.items():
        imports = _imported_modules(folder / f"{name}.py", "qwen3_rerank.diagnosis")
        for other, other_level in layer.items():
            module = "qwen3_rerank.diagnosis" + ("" if other == "__init__" else f".{other}")
            if other != name and module in imports:
                assert other_level < level, f"diagnosis/{name}.py imports {module}, which is not below it"


def test_reference_scores_has_no_formula_of_its_own() -> None:
    """testing.reference_scores is OfficialFormula: the model card's formula is written once."""
    import inspect

    from qwen3_rerank import testing
    from qwen3_rerank.diagnosis import reference

    body = inspect.getsource(testing.reference_scores)
    assert "OfficialFormula" in body
    assert "logits" in body and "softmax(" not in body.split('"""')[-1] and "AutoModel" not in body
    assert "AutoModelForCausalLM" in inspect.getsource(reference.OfficialFormula)


class HostileServer(FakeServer):
    """Answers in the right shape, with one value no honest server sends (issue 25, item 10)."""

    def __init__(self, reference: Any, *, field: str, value: Any) -> None:
        super().__init__(reference, card)
        self.field, self.value = field, value

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        if request.url.path not in ENDPOINTS:
            return response
        body = json.loads(response.content)
        items = body.get("results") or body.get("data")
        last = max(items, key=lambda item: item["index"])
        # The last document's item: an index of -1 there still named it (indices[-1]) before.
        key = self.field if self.field == "index" else ("relevance_score" if "results" in body else "score")
        last[key] = self.value
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("index", -1, "index -1 is not a position"),
        ("index", 0.9, "index 0.9 is not an integer"),
        ("index", "0", "index '0' is not an integer"),
        ("index", True, "index True is not an integer"),
        ("score", float("nan"), "score nan is not a finite number"),
        ("score", float("inf"), "score inf is not a finite number"),
        ("score", "0.5", "score '0.5' is not a number"),
    ],
)
def test_hostile_answers_are_refused_not_scored(ask, transformers_engine, field, value, fragment):
    report = ask(HostileServer(transformers_engine, field=field, value=value))
    for e in report.endpoints:
        assert e.scores is None, (e.endpoint, e.scores)
        assert fragment in (e.note or ""), (e.endpoint, e.note)
    assert "offers none" in report.verdict
    json.dumps(CheckReport(passed=False, engine="remote", clients=report).to_dict(), allow_nan=False)


def test_check_report_json_never_holds_nan_or_infinity() -> None:
    report = CheckReport(passed=False, engine="x", max_diff=float("nan"), tolerance=float("inf"))
    report.rows.append({"case": "relevant", "score": float("-inf"), "reference": 0.5, "diff": float("nan")})
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)  # raised ValueError before: NaN is not JSON
    assert data["max_diff"] is None and data["tolerance"] is None and data["cases"][0]["diff"] is None
    assert "NaN" not in text and "Infinity" not in text


class _SilentServer:
    """A server whose raw endpoints never answer in time: each request waits out what it is given."""

    model_name = ""

    def __init__(self, wait: float, *, takes_seconds: bool) -> None:
        self.wait, self.calls, self.times = wait, [], []
        if takes_seconds:
            self.request_json = self._with_seconds
        else:
            self.request_json = self._without_seconds

    def _with_seconds(self, method: str, path: str, payload: Any, seconds: float | None = None) -> Any:
        return self._without_seconds(method, path, payload, limit=seconds)

    def _without_seconds(self, method: str, path: str, payload: Any, limit: float | None = None) -> Any:
        import time

        from qwen3_rerank import EngineError

        self.calls.append(path)
        self.times.append(time.monotonic())
        time.sleep(self.wait if limit is None else min(self.wait, limit))
        self.times.append(time.monotonic())
        raise EngineError(f"{path}: timed out")


@pytest.mark.parametrize("takes_seconds", [True, False])
def test_the_other_clients_part_has_an_overall_time_limit(transformers_engine, takes_seconds):
    server = _SilentServer(0.6 if not takes_seconds else 30.0, takes_seconds=takes_seconds)
    report = check_other_clients(server, transformers_engine, tolerance=1e-4, time_limit=1.0)
    assert report is not None and report.timed_out
    # 14 requests of 0.6 s (or 30 s each) without the limit; with it, about 1 s (+ one request at most).
    waited = server.times[-1] - server.times[0]
    assert waited < (1.9 if not takes_seconds else 1.3), waited
    assert len(server.calls) < 14
    assert any("spent its 1 s limit" in (e.note or "") for e in report.endpoints)
    assert "did not answer within the check's time limit" in report.verdict
