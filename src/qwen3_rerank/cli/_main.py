"""The entry point: assemble the parser from the commands, set up logging, map errors to exit statuses."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ._base import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, CLIError, CLISubcommand, Parser
from .batch import BatchCommand
from .check import CheckCommand
from .info import InfoCommand
from .make_test_model import MakeTestModelCommand
from .rerank import RerankCommand
from .serve import ServeCommand

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: tuple[CLISubcommand, ...] = (
    RerankCommand(),
    BatchCommand(),
    ServeCommand(),
    CheckCommand(),
    MakeTestModelCommand(),
    InfoCommand(),
)
"""The commands, in the order ``--help`` lists them."""


def build_parser() -> Parser:
    """The ``qwen3-rerank`` parser with every command of :data:`COMMANDS`."""
    parser = Parser(
        prog=PROG,
        description="Rerank documents with Qwen3-Reranker models, check an engine, build test models.",
        epilog="Exit status: 0 ok, 1 failure (check FAIL, engine error), 2 bad usage or input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log INFO (-v) or DEBUG (-vv); show tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    logger = logging.getLogger("qwen3_rerank")
    saved = (logger.level, list(logger.handlers))
    try:
        return _main(parser, argv)
    finally:  # called in-process (tests, embedding): leave the logging setup as it was
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]


def _main(parser: Parser, argv: Sequence[str] | None) -> int:
    verbose = 0
    try:
        try:
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        verbose = args.verbose
        _configure_logging(verbose)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        status: int = args.run(args)
        return status
    except CLIError as exc:
        _error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `qwen3-rerank ... | head`
        # The reader left: point stdout at devnull so the interpreter's final flush is silent.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout without a descriptor
            pass
        return EXIT_OK
    except Exception as exc:  # one line instead of a traceback; -v shows it
        if verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        _error(_describe_exception(exc))
        return _exit_code(exc)


def _exit_code(exc: BaseException) -> int:
    from .._exceptions import ConfigurationError

    if isinstance(exc, (ConfigurationError, argparse.ArgumentTypeError)):
        return EXIT_USAGE
    return EXIT_FAIL


def _describe_exception(exc: BaseException) -> str:
    from .._exceptions import Qwen3RerankError

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (Qwen3RerankError, ValueError, TypeError, OSError)):
        return message
    return f"{type(exc).__name__}: {message} (run with -v for the traceback)"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


class _StderrHandler(logging.Handler):
    """Writes log records to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - logging must never break the command
            self.handleError(record)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logger = logging.getLogger("qwen3_rerank")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    handler.setLevel(level)
