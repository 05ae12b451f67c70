"""`kdbench ...`: list methods, run one cell, a grid, the bench; import released teachers. Exit status: 0; 1 when
grid cells failed; 2 for bad input, printed on one line; 130 when interrupted.

The console entry point (`main`): it parses the command line (`kdbench.cli_parser`), runs the command
(`kdbench.cli_commands`) and turns kdbench's errors, warnings and interruptions into one-line messages and exit
statuses.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from kdbench.allocator import keep_freed_memory
from kdbench.cli_parser import build_parser
from kdbench.errors import KdbenchError, KdbenchWarning

INTERRUPTED = "interrupted; run the same command again to resume"


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """A `warnings.showwarning` that prints kdbench's own warnings on one line, like its errors, and hands
    every other warning to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, KdbenchWarning):
            print(f"kdbench: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside: kdbench's warnings print on one line (run_all.py uses it too)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    with one_line_warnings():
        try:
            return args.func(args)
        except KdbenchError as exc:
            print(
                f"kdbench: error: {' '.join(str(exc).split())}", file=sys.stderr
            )  # one line, whatever it wraps
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        except (
            BrokenPipeError
        ):  # `kdbench methods | head`: the reader left; say nothing more (Python's advice)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
