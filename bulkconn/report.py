"""The append-only JSONL report: one writer, a flush per line, regular fsyncs.

Format: ``docs/report-format.md`` (a versioned contract). Lines are ``header``, ``intent`` (a
non-idempotent action is about to be sent), ``result`` and ``summary``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bulkconn.model import Operation, Outcome, utc_now

FORMAT_VERSION = 1


class ReportWriter:
    """Appends report lines; every line is flushed, and fsynced at most every ``fsync_every_s``."""

    def __init__(self, path: Path, *, fsync_every_s: float = 1.0) -> None:
        self.path = path
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: BinaryIO = path.open("ab")
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """After a crash mid-write the file may end without a newline: end that torn line first."""
        size = self._handle.tell()
        if size == 0:
            return
        with self.path.open("rb") as reader:
            reader.seek(size - 1)
            if reader.read(1) != b"\n":
                self._handle.write(b"\n")
                self._handle.flush()

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(record) + b"\n")
        self._handle.flush()
        now = time.monotonic()
        if now - self._last_fsync >= self._fsync_every_s:
            os.fsync(self._handle.fileno())
            self._last_fsync = now

    def header(self, **fields: Any) -> None:
        self.write({"type": "header", "format": FORMAT_VERSION, **fields})

    def intent(self, op: Operation) -> None:
        """Record, durably, that a non-idempotent action is about to be sent."""
        self.write(
            {
                "type": "intent",
                "key": op.key,
                "line": op.line,
                "tenant": op.tenant,
                "id": op.object_id,
                "action": op.action.value,
                "at": utc_now(),
            }
        )
        os.fsync(self._handle.fileno())

    def result(self, outcome: Outcome) -> None:
        self.write(outcome.to_json())

    def summary(self, **fields: Any) -> None:
        self.write({"type": "summary", **fields})

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
