"""One run per report: the OS lock on REPORT.lock, between real processes, and after kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulkconn import lock as lock_module
from bulkconn.errors import UsageError
from bulkconn.lock import ReportInUse, ReportLock, lock_path, read_holder

# Takes the lock, says so, and holds it until stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from bulkconn.lock import ReportLock
with ReportLock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "r.jsonl")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_second_process_is_refused_naming_the_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """While another process holds the report, taking it fails with the holder's pid, host and start time."""
    with pytest.raises(ReportInUse) as refused:
        ReportLock(tmp_path / "r.jsonl").acquire()
    message = str(refused.value)
    assert f"pid {holder.pid} on host {socket.gethostname()} since 20" in message
    assert message.startswith(f"report {tmp_path / 'r.jsonl'} is in use by ")
    assert message.endswith("; wait for it or stop it")
    assert isinstance(refused.value, UsageError)  # exit code 2: nothing was sent


def test_kill_9_frees_the_lock_and_the_stale_file_is_taken_over(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """After kill -9 of the holder its lock file remains, holds no lock, and the next run takes it silently."""
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    path = lock_path(tmp_path / "r.jsonl")
    stale = read_holder(path)
    assert stale is not None and stale.pid == holder.pid  # the label survived the crash
    with ReportLock(tmp_path / "r.jsonl") as lock:
        assert lock.held
        label = read_holder(path)
        assert label is not None and label.pid == os.getpid()


def test_clean_release_lets_the_next_process_in(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """A holder that ends normally removes its lock file; the next run takes the report."""
    holder.communicate(input="", timeout=30)
    assert holder.returncode == 0
    assert not lock_path(tmp_path / "r.jsonl").exists()
    with ReportLock(tmp_path / "r.jsonl"):
        pass


def test_lock_file_is_owner_only_and_labelled(tmp_path: Path) -> None:
    """The lock file is 0600, even when a stale one was left world-readable, and names this process."""
    path = lock_path(tmp_path / "r.jsonl")
    path.write_text("garbage")
    path.chmod(0o644)
    with ReportLock(tmp_path / "r.jsonl"):
        assert path.stat().st_mode & 0o777 == 0o600
        label = read_holder(path)
        assert label is not None and (label.pid, label.host) == (os.getpid(), socket.gethostname())


def test_same_process_second_lock_is_refused(tmp_path: Path) -> None:
    """The lock is per open file, so two runs inside one process cannot share a report either."""
    with ReportLock(tmp_path / "r.jsonl"), pytest.raises(ReportInUse, match=f"pid {os.getpid()} "):
        ReportLock(tmp_path / "r.jsonl").acquire()


async def test_async_context_manager(tmp_path: Path) -> None:
    """`async with ReportLock(...)` holds the lock inside the block and releases it after."""
    async with ReportLock(tmp_path / "r.jsonl") as lock:
        assert lock.held and lock_path(tmp_path / "r.jsonl").exists()
    assert not lock.held and not lock_path(tmp_path / "r.jsonl").exists()


def test_missing_directory_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    """A report in a directory that does not exist is refused; no directory is created."""
    report = tmp_path / "missing" / "sub" / "r.jsonl"
    with pytest.raises(UsageError, match="does not exist"):
        ReportLock(report).acquire()
    assert not (tmp_path / "missing").exists()


def test_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    """A lock file that is a symbolic link is not followed (it could point at any file of the user)."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    lock_path(tmp_path / "r.jsonl").symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        ReportLock(tmp_path / "r.jsonl").acquire()
    assert target.read_text() == "keep me"


@contextlib.contextmanager
def _unlabelled_holder(report: Path) -> Iterator[Callable[[bytes], None]]:
    """A holder between its two steps: the lock taken through the lock's own open and lock calls (one lock per open
    file on every platform, so it refuses this process too), no label yet. Yields how to write the label later."""
    fd = ReportLock(report)._open()
    assert lock_module._try_lock(fd)

    def label(text: bytes) -> None:
        os.lseek(fd, 0, os.SEEK_SET)  # Windows locks a byte far past the label, and the lock call moved there
        os.write(fd, text)

    try:
        yield label
    finally:
        lock_module._unlock(fd)
        os.close(fd)


def test_a_refused_run_waits_a_moment_for_a_holder_that_has_not_labelled_the_lock_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs started together: the loser may find the lock taken and the label not yet written. It looks again
    for a moment, so its message names the holder instead of "another run"."""
    report = tmp_path / "r.jsonl"
    looks: list[float] = []
    with _unlabelled_holder(report) as label:

        def pause(seconds: float) -> None:  # the holder labels the lock during the refused run's second wait
            looks.append(seconds)
            if len(looks) == 2:
                label(b'{"pid": 4242, "host": "runner-a", "started": "2026-11-29T03:00:00Z"}')

        monkeypatch.setattr(lock_module, "_pause", pause)
        with pytest.raises(ReportInUse, match="in use by pid 4242 on host runner-a since 2026-11-29T03:00:00Z"):
            ReportLock(report).acquire()
    assert len(looks) == 2


def test_a_holder_that_never_labels_the_lock_is_another_run_after_a_bounded_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "r.jsonl"
    looks: list[float] = []
    monkeypatch.setattr(lock_module, "_pause", looks.append)
    with _unlabelled_holder(report), pytest.raises(ReportInUse, match="in use by another run; wait for it or stop"):
        ReportLock(report).acquire()
    assert 0 < sum(looks) <= 0.5 + 1e-9  # at most half a second in all, and only because it was refused
