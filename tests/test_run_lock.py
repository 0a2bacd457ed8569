"""One run per report: `bulkconn run` holds the report's lock from before it reads or writes it until it ends."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.lock import ReportInUse, ReportLock, lock_path
from tests.conftest import Rehearsal, World, read_report

Start = Callable[..., Awaitable[Rehearsal]]

REPORT = "job.report.jsonl"
RUN = ("run", "job.jsonl", "--config", "bulkconn.toml", "-q")


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    """3 tenants, 300 operations (6 syncs) at 40 writes per 5 s window: a run of several seconds (the pacer fills
    each window to the limit, so at Intune's 100 the whole job would fit in one window)."""
    options = EmulatorOptions(tenants=3, connectors_per_tenant=100, time_scale=0.25, seed=9, writes_per_app=40)
    with EmulatorThread(options) as emu:
        yield World(emu, tmp_path, ops=300)


def _results(path: Path) -> int:
    return path.read_bytes().count(b'"type":"result"') if path.exists() else 0


def _interrupt_after(world: World, count: int) -> None:
    """Start a run, and after ``count`` results stop it with SIGINT (in-flight requests drain and are recorded)."""
    proc = world.start(*RUN, "--drain-timeout", "30")
    deadline = time.monotonic() + 60
    while _results(world.dir / REPORT) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err


@pytest.mark.e2e
def test_two_concurrent_resumes_one_is_refused_and_nothing_is_sent_twice(slow_world: World) -> None:
    """Two `run --resume` at once on one report: one is refused naming the other; no patch or sync is sent twice."""
    _interrupt_after(slow_world, 40)
    first, second = slow_world.start(*RUN, "--resume"), slow_world.start(*RUN, "--resume")
    outputs = {proc.pid: proc.communicate(timeout=120) for proc in (first, second)}
    codes = {proc.pid: proc.returncode for proc in (first, second)}
    refused = [pid for pid, code in codes.items() if code == 2]
    assert len(refused) == 1, outputs
    (winner,) = set(codes) - set(refused)
    assert codes[winner] == 0, outputs[winner][1]
    message = outputs[refused[0]][1]
    assert re.search(rf"report \S*{REPORT} is in use by pid {winner} on host \S+ since 20\d\d-", message), message
    assert "Traceback" not in message
    stats = slow_world.emu.stats()["tenants"]
    assert sum(len(t["patches"]) for t in stats.values()) == 294  # every object patched...
    assert all(n == 1 for t in stats.values() for n in t["patches"].values())  # ...once
    assert all(n == 1 for t in stats.values() for n in t["syncs"].values())
    _, results, _ = read_report(slow_world.dir / REPORT)
    assert len(results) == len({r["key"] for r in results}) == 300
    assert not lock_path(slow_world.dir / REPORT).exists()  # released and removed at the end


async def test_a_held_report_is_refused_before_anything_is_written(rehearsal: Start, tmp_path: Path) -> None:
    """While another run holds the report, a run raises ReportInUse and neither creates nor appends to it."""
    rh = await rehearsal()
    job = rh.job(rh.patch_all(["contoso"], lambda alias, c: {"serverName": "held.example.com"}))
    with ReportLock(tmp_path / "report.jsonl"), pytest.raises(ReportInUse):
        await rh.run(job)
    assert not (tmp_path / "report.jsonl").exists()
    assert rh.emu.stats()["writes_total"] == 0
    result = await rh.run(job)  # released: the next run goes ahead
    assert result.counts["succeeded"] == 5
    assert not lock_path(tmp_path / "report.jsonl").exists()


def test_run_is_refused_while_the_report_is_held(world: World) -> None:
    """`bulkconn run` on a held report: exit 2 naming the holder, no report created, nothing sent."""
    with ReportLock(world.dir / REPORT):
        proc = world.bulkconn(*RUN)
    assert proc.returncode == 2 and "is in use by pid" in proc.stderr
    assert not (world.dir / REPORT).exists()
    assert world.emu.stats()["writes_total"] == 0


def test_report_in_a_missing_directory_is_an_error_and_creates_nothing(world: World, tmp_path: Path) -> None:
    """`--report` in a directory that does not exist: exit 2, and no directory or file is created."""
    target = tmp_path / "nonexistent-dir" / "sub" / "r.jsonl"
    proc = world.bulkconn(*RUN, "--report", str(target))
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "nonexistent-dir").exists()
    assert world.emu.stats()["writes_total"] == 0


def test_report_and_spool_are_created_owner_only(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new report and the spool of invalid lines are 0600 (they name objects and errors of a customer's tenant)."""
    modes: list[int] = []
    real = tempfile.TemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        handle = real(*args, **kwargs)
        modes.append(os.fstat(handle.fileno()).st_mode & 0o777)
        return handle

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)  # the runner calls tempfile.TemporaryFile()
    with world.job.open("ab") as job:
        job.write(b'{"tenant": "contoso", "id": "not a valid id"}\n')
    old = os.umask(0o022)
    try:
        proc = world.bulkconn(*RUN)
    finally:
        os.umask(old)
    assert proc.returncode == 1, proc.stderr  # the invalid line
    assert modes == [0o600]
    assert (world.dir / REPORT).stat().st_mode & 0o777 == 0o600
