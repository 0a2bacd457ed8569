"""The rich consoles the CLI prints tables through.

Two things rich does on its own that a command-line tool must not:

- on a closed pipe (``bulkconn report summary R | head -1``) rich's ``Console.on_broken_pipe`` raises
  ``SystemExit(1)``; here it raises :class:`BrokenPipeError`, which
  :func:`bulkconn.cli.common.user_errors` turns into the documented quiet exit 141;
- off a terminal rich wraps every line at 80 columns, cutting sentences and paths in logs and files; here
  output that is not a terminal is not wrapped (unless ``COLUMNS`` says how wide to be).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console

UNWRAPPED_WIDTH = 10_000  # wide enough for any line bulkconn prints; tables still take only the width they need


class _Console(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write to a reader that went away
        raise BrokenPipeError("the output's reader went away")


def console(*, stderr: bool = False, file: TextIO | None = None) -> Console:
    """A console on stdout (``stderr=True``: stderr; or ``file``) that wraps lines only on a terminal."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    unwrapped = not _isatty(stream) and not os.environ.get("COLUMNS")
    return _Console(file=stream, width=UNWRAPPED_WIDTH if unwrapped else None)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream is not a terminal
        return False
