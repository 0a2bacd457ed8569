"""A job file's fingerprint (hash, size, line count): recorded in the report header, checked on resume."""

from __future__ import annotations

import hashlib
from contextlib import closing
from pathlib import Path

from msgspec import Struct

from bulkconn.errors import JobError
from bulkconn.jobfile import LineStream


class Fingerprint(Struct, frozen=True):
    """What identifies a job file's content: recorded in the report header, checked on resume."""

    sha256: str
    size: int
    lines: int  # counted as the scan counts them: a last line without a newline is a line


def fingerprint(path: Path) -> Fingerprint:
    """The job file's hash, size and line count, counted as :func:`scan_job` counts them."""
    stream = LineStream.open(path)
    if not stream.encoding.utf8:  # a UTF-16 line ends at a code unit, not at any 0x0A byte
        with closing(stream):
            for _ in stream:
                pass
        return Fingerprint(stream.sha256, stream.size, stream.lines)
    stream.close()
    digest = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise JobError(f"cannot read the job file: {exc.strerror or exc}", file=str(path)) from exc
    return Fingerprint(digest.hexdigest(), size, lines + (last != b"\n"))
