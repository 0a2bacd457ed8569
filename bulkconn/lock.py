"""One run per report: an OS file lock on a sidecar ``REPORT.lock``.

Two runs appending to one report would both send what the report says is left (patches twice, syncs
twice). A run therefore takes an exclusive lock on ``REPORT.lock`` before it writes anything, and
keeps it until it ends. The lock is the operating system's (``flock`` on POSIX, ``msvcrt.locking`` on
Windows), so it is released by the kernel when the holder dies, even by ``kill -9``; the file itself
is only a label: it holds the holder's pid, host and start time (owner-only, 0600) so that a refused
run can say who holds the report. A lock file left behind by a crashed run holds no lock and is
taken over silently.

Taking the lock never waits: it is one non-blocking try, so it can be called from the event loop.
The lock is held per open file (``flock``), not per process: a second :class:`ReportLock` on the same
report in the same process is refused too. A child made by ``fork`` without ``exec`` inherits the
descriptor and so the lock; the descriptor is not inherited across ``exec`` (PEP 446).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson
from msgspec import Struct

from bulkconn.errors import UsageError

# On Windows the lock is on one byte far past the label, so other processes can still read the label
# (Windows byte-range locks are mandatory: a locked range cannot be read by others).
_WINDOWS_LOCK_OFFSET = 1 << 20
_MAX_LABEL_BYTES = 4096
_TAKEOVER_TRIES = 5
# A holder writes its label right after taking the lock: a refused run that finds no label yet looks again for a
# moment, so that it can name the holder (two runs started together meet in that gap).
_LABEL_WAIT_S = 0.5
_LABEL_POLL_S = 0.01
_pause = time.sleep  # the wait between looks (tests replace it)

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class Holder(Struct, frozen=True):
    """Who holds a report: written into the lock file by the holder."""

    pid: int
    host: str
    started: str  # UTC, ISO 8601 to the second, e.g. "2026-11-28T18:40:00Z"

    @classmethod
    def me(cls) -> Holder:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(os.getpid(), socket.gethostname(), started)


class ReportInUse(UsageError):
    """Another live run holds the report; ``holder`` is None when its label could not be read."""

    def __init__(self, report: Path, holder: Holder | None) -> None:
        who = f"pid {holder.pid} on host {holder.host} since {holder.started}" if holder else "another run"
        super().__init__(f"report {report} is in use by {who}; wait for it or stop it")
        self.report, self.holder = report, holder


def lock_path(report: Path) -> Path:
    """The sidecar lock file of ``report``: ``REPORT.lock`` next to it."""
    return report.with_name(report.name + ".lock")


def read_holder(path: Path) -> Holder | None:
    """The holder named in lock file ``path``, or None if it is missing, empty or unreadable."""
    try:
        with path.open("rb") as handle:
            data = orjson.loads(handle.read(_MAX_LABEL_BYTES))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _live_holder(path: Path) -> Holder | None:
    """The label of the run that holds the lock now: it may have taken the lock and not written its label yet, so
    an empty or unreadable label is read again for up to ``_LABEL_WAIT_S`` (only on the way to refusing a run)."""
    for _ in range(round(_LABEL_WAIT_S / _LABEL_POLL_S)):
        holder = read_holder(path)
        if holder is not None:
            return holder
        _pause(_LABEL_POLL_S)
    return read_holder(path)


class ReportLock:
    """An exclusive, crash-safe lock on one report (use as a sync or async context manager).

    ``acquire`` raises :class:`ReportInUse` naming the live holder, or :class:`UsageError` when the lock
    file cannot be created (for example, the report's directory does not exist: it is never created
    here).
    """

    def __init__(self, report: Path) -> None:
        self.report = report
        self.path = lock_path(report)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Holder:
        """Take the lock with one non-blocking try (never waits) and write our label into the file."""
        if self._fd is not None:
            raise RuntimeError("this ReportLock is already held")
        for _ in range(_TAKEOVER_TRIES):
            fd = self._open()
            if not _try_lock(fd):
                os.close(fd)
                raise ReportInUse(self.report, _live_holder(self.path))
            if self._still_linked(fd):
                return self._label(fd)
            # The previous holder removed the file between our open and our lock: lock the new one.
            _unlock(fd)
            os.close(fd)
        raise ReportInUse(self.report, _live_holder(self.path))

    def release(self) -> None:
        """Remove the label and let the lock go (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sys.platform != "win32":
                # Unlink while still holding the lock, so no one can lock the old file after us.
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            else:
                os.ftruncate(fd, 0)  # an open file cannot be removed on Windows: leave it unlabelled
            _unlock(fd)
        finally:
            os.close(fd)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            raise UsageError(
                f"{self.report}: the directory {self.report.parent} does not exist (create it first)"
            ) from None
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise UsageError(f"{self.report}: cannot create the lock file {self.path}: {reason}") from None

    def _still_linked(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def _label(self, fd: int) -> Holder:
        holder = Holder.me()
        try:
            if sys.platform != "win32":
                os.fchmod(fd, 0o600)  # a stale file may have been left with a wider mode
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, orjson.dumps({"pid": holder.pid, "host": holder.host, "started": holder.started}))
        except OSError:
            _unlock(fd)
            os.close(fd)
            raise
        self._fd = fd
        return holder

    def __enter__(self) -> ReportLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> ReportLock:
        # No thread hop: the try never waits (only a refusal may look at a holder's label again for a moment, on the
        # way to ending the run), and the label is one small write to a local file.
        self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
