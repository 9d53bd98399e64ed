"""What every command shares: exit statuses, the one-line error, argparse types, the command class."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

PROG = "qwen3-rerank"

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class CLIError(Exception):
    """A problem with the user's input or options: printed as one line, exit status 2."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but errors become :class:`CLIError` (one line, no usage dump, no sys.exit)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')")


class CLISubcommand:
    """One ``qwen3-rerank`` command: its name and help, its arguments, and what it runs.

    Subclasses set :attr:`name` and :attr:`help` (and :attr:`description` for ``--help``),
    add their options in :meth:`add_arguments` and do the work in :meth:`run`, which returns the
    exit status. Problems with the user's input are raised as :class:`CLIError`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str | None] = None

    def register(self, subparsers: Any) -> argparse.ArgumentParser:
        """Add this command's parser to ``subparsers``; parsing it sets ``args.run`` to :meth:`run`."""
        parser: argparse.ArgumentParser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(run=self.run)
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's options and positional arguments."""
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the exit status."""
        raise NotImplementedError


def _number(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, then require ``ok``; the message names both."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
probability = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
