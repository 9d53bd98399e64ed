"""The batch scorer: one :class:`~qwen3_rerank.Reranker` per process, one ``rerank_many`` per batch.

A batch is a table of rows in one of two layouts:

* ``"pairs"``: one (query, document) pair per row; out comes one score per row;
* ``"lists"``: one query and a list of candidate documents per row (the usual RAG evaluation
  layout); out come a list of scores and a list of ranks (1 = best) per row, in the order of the
  row's documents.

Every input column is kept; the score (and rank) columns are added. The scorer is a callable
class so that Ray Data's actor pool builds it once per actor (the engine loads once) and calls it
per batch; it imports no Ray and works the same in-process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .._reranker import Reranker

__all__ = ["LAYOUTS", "BatchScorer", "Layout", "resolve_layout"]

Layout = Literal["auto", "pairs", "lists"]
LAYOUTS = ("auto", "pairs", "lists")


def resolve_layout(layout: str, document_type: Any) -> Literal["pairs", "lists"]:
    """The layout a document column of pyarrow type ``document_type`` means under ``layout``.

    ``"auto"`` reads a list column as ``"lists"`` and anything else as ``"pairs"``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout  # type: ignore[return-value]
    import pyarrow as pa

    is_list = pa.types.is_list(document_type) or pa.types.is_large_list(document_type)
    return "lists" if is_list else "pairs"


class BatchScorer:
    """Score a batch of rows with one ``Reranker.rerank_many`` call (token exact).

    Args:
        engine: The engine name (``"transformers"``, ``"vllm"``, ``"remote"``), or a
            :class:`~qwen3_rerank.Reranker` to use as it is (in-process only: Ray builds one per
            actor from the name); ``model`` and ``engine_options`` must then be left out.
        model: Hub id or local path of the checkpoint (for ``"remote"``: the tokenizer source).
        engine_options: Keywords for :func:`qwen3_rerank.settings.build_reranker`: the engine's
            (``dtype``, ``device``, ``base_url``, ...) and the Reranker's (``max_length``,
            ``long_documents``, ``window_overlap``).
        instruction: The task instruction (``None``: the model card's default).
        query_column: Column holding the query text.
        document_column: Column holding the document text (``"pairs"``) or a list of document
            texts (``"lists"``; in CSV a JSON array in the cell).
        score_column: Column added with P(yes) (a float, or a list of floats for ``"lists"``).
        rank_column: Column added with each document's rank within its row, 1 = best
            (``"lists"`` only).
        layout: ``"pairs"``, ``"lists"`` or ``"auto"`` (a list-typed document column is
            ``"lists"``).

    The engine is built in ``__init__`` (once per Ray actor). A batch may be a
    ``pyarrow.Table``, a ``pandas.DataFrame`` or a ``dict`` of columns (numpy arrays, lists);
    the result has the same kind with every input column kept and the new columns appended.
    The input batch is never modified.

    Example:
        >>> import pyarrow as pa
        >>> scorer = BatchScorer("transformers", model="Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> scorer(pa.table({"query": ["q"], "document": ["d"], "id": [7]})).column_names  # doctest: +SKIP
        ['query', 'document', 'id', 'score']
    """

    def __init__(
        self,
        engine: str | Reranker = "transformers",
        *,
        model: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        query_column: str = "query",
        document_column: str = "document",
        score_column: str = "score",
        rank_column: str = "rank",
        layout: Layout = "auto",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        names = {"query_column": query_column, "document_column": document_column, "score_column": score_column}
        if layout != "pairs":
            names["rank_column"] = rank_column
        if len(set(names.values())) != len(names):
            raise ValueError(f"the column names must differ, got {names}")
        self.query_column = query_column
        self.document_column = document_column
        self.score_column = score_column
        self.rank_column = rank_column
        self.layout: Layout = layout
        self.instruction = instruction
        if isinstance(engine, str):
            from ..settings import build_reranker

            self.reranker = build_reranker(engine, model=model, **dict(engine_options or {}))
            self._owned = True
        else:
            if model is not None or engine_options:
                raise TypeError("model and engine_options build an engine: leave them out when passing a Reranker")
            self.reranker, self._owned = engine, False

    def close(self) -> None:
        """Release the Reranker this scorer built (a Reranker passed in is left open)."""
        if self._owned:
            self.reranker.close()

    # -- the batch kinds ------------------------------------------------------------------------
    def __call__(self, batch: Any) -> Any:
        """Score ``batch`` (a ``pyarrow.Table``, ``pandas.DataFrame`` or dict of columns)."""
        if isinstance(batch, Mapping):
            return self._score_dict(batch)
        module = type(batch).__module__.split(".")[0]
        if module == "pyarrow":
            return self.score_table(batch)
        if module == "pandas":
            return self._score_pandas(batch)
        raise TypeError(
            f"a batch must be a pyarrow.Table, a pandas.DataFrame or a dict of columns, got {type(batch).__name__}"
        )

    def score_table(self, table: Any) -> Any:
        """Score a ``pyarrow.Table``: the same table with the score (and rank) columns appended."""
        import pyarrow as pa

        self._check_columns(table.column_names)
        layout = resolve_layout(self.layout, table.schema.field(self.document_column).type)
        self._check_rank_column(table.column_names, layout)
        queries = table.column(self.query_column).to_pylist()
        documents = table.column(self.document_column).to_pylist()
        scores, ranks = self.score_lists(queries, documents, layout)
        if layout == "pairs":
            return table.append_column(self.score_column, pa.array(scores, pa.float64()))
        out = table.append_column(self.score_column, pa.array(scores, pa.list_(pa.float64())))
        return out.append_column(self.rank_column, pa.array(ranks, pa.list_(pa.int64())))

    def _score_pandas(self, frame: Any) -> Any:
        self._check_columns(list(frame.columns))
        queries = list(frame[self.query_column])
        documents = list(frame[self.document_column])
        layout = self._layout_of(documents)
        self._check_rank_column(list(frame.columns), layout)
        scores, ranks = self.score_lists(queries, documents, layout)
        out = frame.copy()
        out[self.score_column] = scores
        if layout == "lists":
            out[self.rank_column] = ranks
        return out

    def _score_dict(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        self._check_columns(list(batch))
        queries = list(batch[self.query_column])
        documents = list(batch[self.document_column])
        layout = self._layout_of(documents)
        self._check_rank_column(list(batch), layout)
        scores, ranks = self.score_lists(queries, documents, layout)
        out = dict(batch)
        if layout == "pairs":
            out[self.score_column] = np.asarray(scores, dtype=np.float64)
        else:
            out[self.score_column] = _object_array([np.asarray(s, dtype=np.float64) for s in scores])
            out[self.rank_column] = _object_array([np.asarray(r, dtype=np.int64) for r in ranks])
        return out

    def _layout_of(self, documents: Sequence[Any]) -> Literal["pairs", "lists"]:
        if self.layout != "auto":
            return self.layout
        first = next((d for d in documents if d is not None), None)
        return "pairs" if first is None or isinstance(first, str) else "lists"

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in (self.query_column, self.document_column) if c not in columns]
        if missing:
            raise ValueError(
                f"the batch has no column {missing[0]!r} (columns: {list(columns)}); "
                "name the query and document columns with query_column= / document_column= "
                "(CLI: --query-column / --document-column)"
            )
        if self.score_column in columns:
            _taken(self.score_column)

    def _check_rank_column(self, columns: Sequence[str], layout: str) -> None:
        if layout == "lists" and self.rank_column in columns:
            _taken(self.rank_column)

    # -- scoring --------------------------------------------------------------------------------
    def score_lists(
        self, queries: Sequence[Any], documents: Sequence[Any], layout: Literal["pairs", "lists"]
    ) -> tuple[list[Any], list[Any]]:
        """Scores (and, for ``"lists"``, ranks) of rows given as Python values, in one engine call.

        Returns ``(scores, ranks)``: for ``"pairs"`` a float per row and an empty ``ranks``; for
        ``"lists"`` a list of floats and a list of ranks per row, in the order of its documents.
        """
        texts = [self._query(q, row) for row, q in enumerate(queries)]
        if layout == "pairs":
            doc_lists = [[self._text(d, row, self.document_column)] for row, d in enumerate(documents)]
        else:
            doc_lists = [self._documents(d, row) for row, d in enumerate(documents)]
        rankings = self.reranker.rerank_many(texts, doc_lists, instruction=self.instruction)
        scores: list[Any] = []
        ranks: list[Any] = []
        for ranking, docs in zip(rankings, doc_lists, strict=True):
            row_scores = [0.0] * len(docs)
            row_ranks = [0] * len(docs)
            for rank, result in enumerate(ranking, 1):  # best first
                row_scores[result.index] = result.score
                row_ranks[result.index] = rank
            if layout == "pairs":
                scores.append(row_scores[0])
            else:
                scores.append(row_scores)
                ranks.append(row_ranks)
        return scores, ranks

    def _query(self, value: Any, row: int) -> str:
        return self._text(value, row, self.query_column)

    @staticmethod
    def _text(value: Any, row: int, column: str) -> str:
        if isinstance(value, str):
            return value
        what = "null" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"row {row} of the batch: column {column!r} is {what}, not a text; fix or drop that row")

    def _documents(self, value: Any, row: int) -> list[str]:
        if isinstance(value, str):  # a CSV cell holds the list as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                value = None
            if not isinstance(value, list):
                raise ValueError(
                    f"row {row} of the batch: column {self.document_column!r} is a text, not a list of "
                    "documents; with layout 'lists' a CSV cell must hold a JSON array of strings"
                )
        if value is None or isinstance(value, (bytes, Mapping)):
            raise ValueError(
                f"row {row} of the batch: column {self.document_column!r} is "
                f"{'null' if value is None else type(value).__name__}, not a list of documents"
            )
        return [self._text(d, row, f"{self.document_column}[{i}]") for i, d in enumerate(list(value))]


def _taken(column: str) -> None:
    raise ValueError(
        f"the input already has a column {column!r}; choose another output name with "
        "score_column= / rank_column= (CLI: --score-column / --rank-column)"
    )


def _object_array(items: list[Any]) -> Any:
    import numpy as np

    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
