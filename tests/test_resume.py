"""Crash safety and resume, in real subprocesses: kill -9, SIGINT drain, torn lines, changed jobs."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator import EmulatorOptions, EmulatorThread
from tests.conftest import FORCE_SIGNAL_FALLBACK, World, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

REPORT = "job.report.jsonl"


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    """3 tenants, 300 operations (6 syncs) at 30 writes per 5 s window: a run of ~15 s to interrupt.

    Pacing fills each window to its limit, so at Intune's 100 per window each tenant's 100 operations would all go in
    the first window and a kill could arrive after the run had ended.
    """
    options = EmulatorOptions(tenants=3, connectors_per_tenant=100, time_scale=0.25, seed=9, writes_per_app=30)
    with EmulatorThread(options) as emu:
        yield World(emu, tmp_path, ops=300)


def _results(world: World) -> int:
    path = world.dir / REPORT
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().splitlines() if b'"type":"result"' in line)


def _wait_for_results(world: World, proc: subprocess.Popen[str], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _results(world) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def _job_lines(world: World) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in world.job.read_bytes().splitlines()]


def _assert_final_state(world: World) -> None:
    """Every key has exactly one result; every PATCH landed; no sync ran twice."""
    _, results, _ = read_report(world.dir / REPORT)
    per_key = Counter(x["key"] for x in results)
    assert sorted(per_key, key=int) == [str(n) for n in range(1, 301)]
    assert set(per_key.values()) == {1}
    status = {x["key"]: x["status"] for x in results}
    state = world.emu.state()["tenants"]
    for number, line in enumerate(_job_lines(world), start=1):
        if "patch" in line:
            assert status[str(number)] == "succeeded"
            entity = state[line["tenant"]]["exchangeConnectors"][line["id"]]
            assert all(entity[k] == v for k, v in line["patch"].items())
        else:
            assert status[str(number)] in ("succeeded", "uncertain")
    for entry in world.emu.stats()["tenants"].values():
        assert all(count == 1 for count in entry["syncs"].values())


def test_kill_9_at_several_points_then_resume_until_done(slow_world: World) -> None:
    """SIGKILL twice mid-run; each --resume carries on; in the end every operation has one final result."""
    args = ["run", "job.jsonl", "--config", "bulkconn.toml", "-q"]
    for stop_at in (25, 140):
        proc = slow_world.start(*args, *(["--resume"] if stop_at != 25 else []))
        _wait_for_results(slow_world, proc, stop_at)
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    final = slow_world.bulkconn(*args, "--resume", timeout=120)
    assert final.returncode in (0, 1), final.stderr  # 1 only if a sync was cut off mid-flight (uncertain)
    assert "resuming" in final.stderr
    _assert_final_state(slow_world)
    header_count = sum(1 for x in (slow_world.dir / REPORT).read_bytes().splitlines() if b'"type":"header"' in x)
    assert header_count == 3
    again = slow_world.bulkconn(*args, "--resume")
    assert "nothing to resume" in again.stderr
    assert again.returncode == final.returncode


@pytest.mark.parametrize("prelude", ["", FORCE_SIGNAL_FALLBACK], ids=["loop-handlers", "signal-module-fallback"])
def test_sigint_drains_in_flight_work_and_exits_130(slow_world: World, prelude: str) -> None:
    """First SIGINT: in-flight requests finish and are recorded, the summary says how to resume, exit 130.

    Also with the event loop's signal handlers refused, as on Windows: the signal-module fallback does the same.
    """
    args = ("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--drain-timeout", "20")
    proc = slow_world.start(*args, prelude=prelude)
    _wait_for_results(slow_world, proc, 40)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "resume with" in err and "--resume" in err
    _, results, summary = read_report(slow_world.dir / REPORT)
    assert summary["interrupted"] is True
    recorded = {x["id"] for x in results if x["status"] == "succeeded" and x["action"] == "update"}
    patched = {i for t in slow_world.emu.stats()["tenants"].values() for i in t["patches"]}
    assert patched == recorded  # nothing the service applied is missing from the report
    assert len(results) < 300
    resumed = slow_world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_final_state(slow_world)


def test_torn_last_line_is_ignored_and_redone(world: World) -> None:
    """A report cut off mid-line (crash during a write) resumes: the torn record's operation is redone."""
    first = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q")
    assert first.returncode == 0
    report = world.dir / REPORT
    lines = report.read_bytes().splitlines(keepends=True)
    results = [i for i, line in enumerate(lines) if b'"type":"result"' in line]
    keep = [*lines[: results[-1]], lines[results[-1]][:40]]  # cut the last result in half, drop the summary
    report.write_bytes(b"".join(keep))
    lost_key = orjson.loads(lines[results[-1]])["key"]
    resumed = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 torn line" in resumed.stderr and "1 to go" in resumed.stderr
    _, final, _ = read_report(report)
    assert [x["key"] for x in final].count(lost_key) == 1
    assert len(final) == 40


def test_resume_refuses_a_changed_job_unless_forced(world: World) -> None:
    """A job that changed since the report began is refused with what changed; --force overrides."""
    assert world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q").returncode == 0
    lines = world.job.read_bytes().splitlines(keepends=True)
    world.job.write_bytes(b"".join(reversed(lines)))
    refused = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "--resume")
    assert refused.returncode == 2
    assert "job file changed" in refused.stderr and "--force" in refused.stderr
    forced = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume", "--force")
    assert forced.returncode == 0 and "nothing to resume" in forced.stderr


def test_report_failed_makes_a_job_of_exactly_the_failures(world: World) -> None:
    """Failures (a tenant with a wrong secret) -> `report failed` -> fix the secret -> that job succeeds."""
    secret = world.dir / "bulkconn.secrets" / "fabrikam.secret"
    good = secret.read_text()
    secret.write_text("wrong\n")
    assert world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q").returncode == 1
    out = world.bulkconn("report", "failed", REPORT, "-o", "retry.jsonl", "--json")
    assert out.returncode == 0, out.stderr
    expected = [x for x in _job_lines(world) if x["tenant"] == "fabrikam"]
    retry = [orjson.loads(x) for x in (world.dir / "retry.jsonl").read_bytes().splitlines()]
    assert orjson.loads(out.stdout)["operations"] == len(expected) == len(retry)
    assert [{k: v for k, v in x.items() if k != "key"} for x in retry] == expected
    secret.write_text(good)
    writes_before = world.emu.stats()["writes_total"]
    rerun = world.bulkconn("run", "retry.jsonl", "--config", "bulkconn.toml", "-q")
    assert rerun.returncode == 0, rerun.stderr
    assert world.emu.stats()["writes_total"] - writes_before == len(expected)


def test_retry_failed_and_summary_of_a_resumed_report(world: World) -> None:
    """--resume --retry-failed re-attempts failures; `report summary` counts the latest result per operation."""
    secret = world.dir / "bulkconn.secrets" / "fabrikam.secret"
    good = secret.read_text()
    secret.write_text("wrong\n")
    world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q")
    plain = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "--resume")
    assert "nothing to resume" in plain.stderr and plain.returncode == 1
    secret.write_text(good)
    retried = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    summary = orjson.loads(world.bulkconn("report", "summary", REPORT, "--json").stdout)
    assert summary["operations"] == 40
    assert summary["by_status"] == {"succeeded": 40}
    assert summary["runs"] == 2  # the "nothing to resume" call appended nothing
    assert set(summary["by_tenant"]) == {"contoso", "fabrikam"}
    table = world.bulkconn("report", "summary", REPORT)
    assert "succeeded" in table.stdout and "fabrikam" in table.stdout
