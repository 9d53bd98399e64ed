"""The ``qwen3-rerank`` command line (also ``python -m qwen3_rerank``).

Commands::

    qwen3-rerank rerank QUERY --docs FILE|-      rank documents for a query (or --queries FILE)
    qwen3-rerank batch INPUT OUTPUT              score every row of a Parquet/JSONL/CSV file (Ray: --workers N)
    qwen3-rerank serve                           serve it over HTTP (Cohere, Jina, TEI, vLLM APIs)
    qwen3-rerank check                           self-test the configured engine against the reference
    qwen3-rerank make-test-model DIR             write a random-weight test checkpoint
    qwen3-rerank info                            versions, engines, devices, vLLM platform

Exit status: 0 success (``check``: PASS), 1 a failed run (``check``: FAIL, an engine error, a
missing package, a server that cannot be reached), 2 bad usage or bad input found before any model
loads (an unknown option or an invalid value such as ``--dtype float64``, a model path that does
not exist, an unreadable file, a malformed JSONL line, ``NaN`` in JSON, a lone surrogate in a
text, empty input), 130 interrupted (Ctrl-C; a remote run cancels its requests in flight). Errors
are one line on stderr, without a traceback (``-v`` shows it).

One module per command (:mod:`.rerank`, :mod:`.batch`, :mod:`.serve`, :mod:`.check`, :mod:`.make_test_model`,
:mod:`.info`),
each a :class:`~._base.CLISubcommand`; :mod:`._main` assembles the parser and turns errors into
exit statuses. Only the standard library is imported at start-up; an engine's packages (torch,
vllm, httpx) are imported by the command that creates that engine. This package is the only
place of the library that writes to stdout/stderr.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
