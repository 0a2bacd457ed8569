"""Files a command writes (``-o``/``--out``): never an input, an existing file only with ``--force``, ``-`` is stdout.

A report holds the pre-images a rollback needs and the job names every operation, so an output path that is
one of the command's inputs is refused even with ``--force``. An output is written beside its final name and
then takes that name in one step: a reader never sees half a file, and without ``--force`` an existing file
(even one that appeared meanwhile) is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bulkconn.errors import UsageError

STDOUT = "-"  # `-o -`: standard output, as shell tools read it


def is_stdout(path: Path) -> bool:
    return str(path) == STDOUT


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def check_output(out: Path, *, inputs: Iterable[tuple[str, Path | None]], what: str, force: bool) -> None:
    """Refuse, before any work, an output that is an input (never) or an existing file (unless ``force``).

    ``inputs``: (how the input is named in the message, its path or None); ``what``: what is being written.

    Raises:
        UsageError: ``out`` is one of ``inputs``, or exists and ``force`` is off.
    """
    if is_stdout(out):
        return
    for name, path in inputs:
        if path is not None and _same_file(out, path):
            raise UsageError(f"{out} is {name}; write {what} to another file")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it, or choose another -o")


def publish(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Make ``tmp`` appear as ``out`` in one step; without ``overwrite`` never replace an existing file."""
    if overwrite:
        tmp.replace(out)
        return
    try:
        os.link(tmp, out)  # fails if ``out`` exists, atomically
    except FileExistsError:
        raise UsageError(f"{out} already exists; pass --force to replace it, or choose another -o") from None
    except OSError:  # a file system without hard links: check, then rename
        if out.exists():
            raise UsageError(f"{out} already exists; pass --force to replace it, or choose another -o") from None
        tmp.replace(out)


@contextlib.contextmanager
def written(out: Path, *, force: bool) -> Iterator[BinaryIO]:
    """A binary sink for ``out``: stdout for ``-``, else a file published whole when the block ends.

    Raises:
        UsageError: the file cannot be written, or (without ``force``) exists by then.
    """
    if is_stdout(out):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
        try:
            publish(tmp, out, overwrite=force)
        except OSError as exc:
            raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
