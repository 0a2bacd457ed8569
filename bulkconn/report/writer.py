"""The append-only JSONL report: one writer, a flush per step of the run, regular fsyncs.

What each line holds is :mod:`bulkconn.report.format`; this module only makes lines durable. Use it as a
(sync or async) context manager: it is closed, flushed and fsynced on exit.

Inside a running event loop, the lines written during one step of the loop (the results of one answer: up to 20
for a ``$batch``, encoded together by :func:`~bulkconn.report.format.encode_lines`) go out together in one
``write`` and one flush, scheduled with ``call_soon``: they reach the
kernel before the loop waits for anything (it does not block while a callback is ready). A kill before that flush
loses only results whose answers had just arrived: those operations count as in flight and are sent again by
``--resume``, which the durability guarantee (``docs/report-format.md``) allows. Outside a loop every line is
flushed at once, and so are the waiting lines once there are ``MAX_PENDING`` of them (a run that records many
invalid lines in one step holds no more than that in memory).

A write error in a scheduled flush (a full disk) cannot reach the engine from the loop's callback: it is kept
and raised by the next ``write``, ``durable`` or ``close``, so the run stops on the next result, as it did when
every line was written at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import msgspec

from bulkconn.model import Operation, Outcome, utc_now
from bulkconn.report import format as fmt

MAX_PENDING = 256  # lines held for one step's flush at most


class ReportWriter:
    """Appends report lines; every step's lines are flushed (see the module doc), and fsynced at most every
    ``fsync_every_s``.

    A new report is created owner-only (0600); an existing one keeps its mode. Nothing else is created: a
    missing directory is an error, not made. Raises ``OSError`` when the report cannot be opened (the
    caller says so to the user).
    """

    def __init__(self, path: Path, *, fsync_every_s: float = 1.0) -> None:
        self.path = path
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        self._handle: BinaryIO = os.fdopen(fd, "ab")
        self._pending: list[bytes] = []  # encoded lines waiting for this step's flush
        self._results: list[fmt.ResultLine] = []  # result lines waiting after those, encoded together (`result`)
        self._flush_scheduled = False
        self._failed: Exception | None = None  # a scheduled flush's error, raised by the next call
        self._repair_torn_tail()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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

    def write(self, record: fmt.Record) -> None:
        """Append one line: flushed at the end of this step of the event loop, or at once outside a loop."""
        self._raise_failure()
        self._encode_results()
        self._pending.append(fmt.encode(record))
        self._schedule()

    def result(self, outcome: Outcome) -> None:
        """Append one operation's ``result`` line, as :meth:`write` does (the outcome as it is now): the results of
        a step are encoded together when it is flushed (:func:`~bulkconn.report.format.encode_lines`)."""
        if self._failed is not None:
            raise self._failed
        self._results.append(fmt.result_line(outcome))
        if not self._flush_scheduled or len(self._results) >= MAX_PENDING:
            self._schedule()

    def _encode_results(self) -> None:
        """Encode the waiting results into ``_pending`` (before a line written after them)."""
        if self._results:
            self._pending.append(fmt.encode_lines(self._results))
            self._results.clear()

    def _schedule(self) -> None:
        """Flush at the end of this step of the loop; at once outside a loop or when enough lines wait."""
        if len(self._pending) + len(self._results) >= MAX_PENDING:
            self.flush()
            return
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        """``flush`` from the loop: an error is kept for the next call instead of going to the loop's handler."""
        try:
            self.flush()
        except (OSError, ValueError, msgspec.EncodeError) as exc:  # a write, or a line that cannot be encoded
            self._failed = exc

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    def flush(self) -> None:
        """Write the pending lines in one ``write`` and flush them; fsync if the last was ``fsync_every_s`` ago."""
        self._flush_scheduled = False
        if self._handle.closed:
            return
        self._encode_results()
        if self._pending:
            lines = b"".join(self._pending)
            self._pending.clear()
            self._handle.write(lines)
        self._handle.flush()
        now = time.monotonic()
        if now - self._last_fsync >= self._fsync_every_s:
            self._fsync(now)

    def _fsync(self, now: float) -> None:
        os.fsync(self._handle.fileno())
        self._last_fsync = now

    def intent(self, op: Operation) -> None:
        """Record, durably, that a non-idempotent action is about to be sent (the lines before it too)."""
        self.durable([fmt.intent(op, at=utc_now())])

    def durable(self, records: Iterable[fmt.Record]) -> None:
        """Write ``records`` (after the pending lines) and fsync before returning: a selector's expansion before
        the first write of its line, a pre-image (``backup``) before its write, an ``intent`` before its action."""
        self._raise_failure()
        self._encode_results()
        self._pending.extend(fmt.encode(record) for record in records)
        self._handle.write(b"".join(self._pending))
        self._pending.clear()
        self._handle.flush()
        self._fsync(time.monotonic())

    def close(self) -> None:
        """Flush, fsync and close; raises a write error met on the way, or one a scheduled flush kept."""
        if self._handle.closed:
            return
        try:
            self.flush()
            os.fsync(self._handle.fileno())
        finally:
            self._handle.close()
        self._raise_failure()
