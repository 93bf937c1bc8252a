"""The command line's error boundary: every failure ends as one line on stderr and an exit status.

- a user error or a known failure class (see :mod:`core.boundary`): ``error: <sentence>``, exit 2;
- a bad option (argparse): ``error: <what is wrong>; see python -m core ... --help``, exit 2,
  without argparse's usage block;
- Ctrl-C: one line saying what is kept, exit 130;
- anything else (a bug): ``error: Unexpected failure (...); the full traceback is in <log>``,
  exit 1; the traceback goes to the log file, never to the terminal.

Notices (cost estimates) from the ``core`` logger are printed as ``note: ...`` lines.
It wraps whatever ``main`` the CLI has, so it survives a rewrite of the argument parsing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from core.boundary import is_known, user_message

EXIT_USER = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message>; see <prog> --help.`` and exit 2."""
        text = " ".join(message.split()).rstrip(".")
        self.exit(EXIT_USER, f"error: {text}; see {self.prog} --help.\n")


def _number(kind: type, low: float | None, low_open: bool, high: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high or value != value:  # NaN is out of every range
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what}")
        return value

    return parse


positive_int = _number(int, 0, True, None, "a whole number of at least 1")
non_negative_int = _number(int, 0, False, None, "a whole number of at least 0")
positive_float = _number(float, 0, True, None, "a number above 0")
correlation = _number(float, -1, False, 1, "a number from -1 to 1")
fraction = _number(float, 0, False, 1, "a number from 0 to 1")


class _NoticeHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        # tqdm.write clears an active progress bar first, so the note gets a line of its own
        tqdm.write(f"note: {' '.join(record.getMessage().split())}", file=sys.stderr)


def install_notices() -> None:
    """Print the ``core`` logger's warnings (cost estimates, ...) as ``note:`` lines on stderr, once."""
    logger = logging.getLogger("core")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler(logging.WARNING))
        logger.propagate = False
    logger.setLevel(logging.INFO)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run the CLI's ``main`` inside the error boundary.

    Args:
        main: the undecorated main (parses ``argv``, dispatches, returns the exit status).
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 2 (user error), 1 (a bug, logged), 130 (interrupted).
    """
    install_notices()
    context = "python -m core " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was replaced; finished harvest shards are kept, so the same command resumes.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BaseException as exc:
        print(f"error: {user_message(exc, context)}", file=sys.stderr)
        return EXIT_USER if is_known(exc) else EXIT_BUG
