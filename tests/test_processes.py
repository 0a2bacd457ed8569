"""``run --processes N``'s machinery: the pipe protocol, how a child's end is read, signals, and child command lines.

The orchestration is exercised here with small stand-in children (real processes, a few lines of Python each);
the real ``bulkconn run --shard`` children are in ``tests/test_scaleout_e2e.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from bulkconn.childpipe import PROGRESS_FLAG, final_record, progress_record, stop_when_parent_dies
from bulkconn.cli.problems import RunCommands
from bulkconn.cli.run import run as run_command
from bulkconn.cli.scaleout import _conclude, _passthrough, child_environment
from bulkconn.model import Progress, Status
from bulkconn.processes import (
    ProcessesResult,
    ShardCommand,
    ShardRun,
    combined_progress,
    run_shards,
    shard_commands,
    shard_reports,
)
from bulkconn.runner import RunResult
from bulkconn.shards import ShardSpec, shard_report_path


def shard_run(index: int = 0, count: int = 2) -> ShardRun:
    spec = ShardSpec(index, count)
    return ShardRun(ShardCommand(spec, Path(f"r{index}.jsonl"), ("x",)))


def test_progress_and_final_lines_round_trip_through_the_parent() -> None:
    """What a child writes on stdout is what the parent reads back; a stray line is ignored."""
    progress = Progress(total=10, throttled=2, retries=3)
    for status in (Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED):
        progress.record("contoso", status)
    result = RunResult(report=Path("r"), counts=Counter(succeeded=2, failed=1), tenants=1, duration_s=1.23456)
    result.per_tenant = {"contoso": Counter(succeeded=2, failed=1)}
    run = shard_run()
    for raw in (progress_record(progress), b"not json\n", b"[1]\n", final_record(result)):
        run.take(raw)
    assert (run.progress.total, run.progress.finished, run.progress.throttled, run.progress.retries) == (10, 3, 2, 3)
    assert run.final is not None
    assert run.final["counts"] == {"succeeded": 2, "failed": 1} and run.final["duration_s"] == 1.235


@pytest.mark.parametrize(
    ("code", "signalled", "state"),
    [
        (None, False, "running"),
        (0, False, "finished"),
        (1, False, "finished"),
        (3, False, "finished"),
        (2, False, "refused"),
        (130, False, "interrupted"),
        (-signal.SIGTERM, True, "interrupted"),  # stopped by the forwarded signal before its run began
        (-signal.SIGTERM, False, "crashed"),
        (-signal.SIGKILL, True, "crashed"),
        (70, False, "crashed"),
    ],
)
def test_a_childs_exit_says_how_its_shard_ended(code: int | None, signalled: bool, state: str) -> None:
    """Exit codes 0/1/3 finished (summary written), 2 refused, 130 interrupted; a kill or a bug is a crash."""
    run = shard_run()
    run.returncode, run.signalled = code, signalled
    assert run.state == state


def test_the_parent_adds_up_its_childrens_counters_and_results() -> None:
    """One display and one summary: counters, per-tenant counts, tenants and auth failures summed over shards."""
    one, two = shard_run(0), shard_run(1)
    for run, tenant, n in ((one, "contoso", 2), (two, "fabrikam", 3)):
        result = RunResult(report=Path("r"), counts=Counter(succeeded=n), tenants=1)
        result.per_tenant = {tenant: Counter(succeeded=n)}
        run.take(final_record(result))
        run.progress.total, run.progress.throttled = n, 1
        run.progress.done[Status.SUCCEEDED.value] = n
        run.returncode = 0
    two.final = {**(two.final or {}), "auth_failures": {"fabrikam": "invalid_client: no"}}
    total = combined_progress([one, two], started=0.0)
    assert (total.total, total.finished, total.throttled) == (5, 5, 2)
    outcome = ProcessesResult([one, two], signalled=False, duration_s=4.0)
    result = outcome.combined(Path("merged.jsonl"))
    assert result.counts == Counter(succeeded=5) and result.tenants == 2 and not result.interrupted
    assert set(result.per_tenant) == {"contoso", "fabrikam"} and result.auth_failures == {
        "fabrikam": "invalid_client: no"
    }
    assert not result.nothing_to_do and outcome.of_state("finished") == [one, two]


def test_shard_reports_sit_next_to_the_merged_report_under_the_default_shard_names(tmp_path: Path) -> None:
    """For the default JOB.report.jsonl the shard reports are exactly `run --shard K/N`'s defaults."""
    job = tmp_path / "job.jsonl"
    assert shard_reports(tmp_path / "job.report.jsonl", 3) == [
        shard_report_path(job, ShardSpec(k, 3)) for k in range(3)
    ]
    assert shard_reports(tmp_path / "out.jsonl", 1) == [tmp_path / "out.shard-0-of-1.report.jsonl"]


def test_children_get_the_users_options_and_their_own_shard_report_and_display(tmp_path: Path) -> None:
    """The child command line: `run JOB --shard K/N --report R --progress-jsonl` plus the options the user gave."""
    args = ["job.jsonl", "--processes", "2", "--batch-size", "5", "--resume", "--config", "c.toml", "-q"]
    with run_command.make_context("run", args) as ctx:
        options = _passthrough(ctx)
    assert options[options.index("--batch-size") : options.index("--batch-size") + 2] == ["--batch-size", "5"]
    assert "--resume" in options and options[:2] == ["--config", "c.toml"]
    assert not {"--processes", "--quiet", "--report", "--shard", "--dry-run", "--strict"} & set(options)
    (first, second) = shard_commands(tmp_path / "job.jsonl", tmp_path / "job.report.jsonl", 2, options=options)
    assert first.argv[:3] == (sys.executable, "-m", "bulkconn")
    tail = first.argv[3:]
    assert tail[:7] == (
        "run",
        str(tmp_path / "job.jsonl"),
        "--shard",
        "0/2",
        "--report",
        str(first.report),
        PROGRESS_FLAG,
    )
    assert second.spec == ShardSpec(1, 2) and tail[7:] == tuple(options)


def test_children_do_not_read_runs_option_variables_again() -> None:
    """BULKCONN_RUN_PROCESSES=2 must not make each child start children: the parent passed every option itself."""
    env = {"BULKCONN_RUN_PROCESSES": "2", "BULKCONN_RUN_QUIET": "1", "BULKCONN_CONFIG": "c.toml", "PATH": "/bin"}
    assert child_environment(env) == {"BULKCONN_CONFIG": "c.toml", "PATH": "/bin"}


def test_a_child_stops_itself_when_its_parent_is_gone() -> None:
    """The parent's end of the stdin pipe closing (the parent died) makes the child stop as on SIGTERM."""
    read_end, write_end = os.pipe()
    stopped = threading.Event()
    thread = stop_when_parent_dies(read_end, stop=stopped.set)
    assert not stopped.is_set()
    os.close(write_end)
    thread.join(timeout=5)
    os.close(read_end)
    assert stopped.is_set()


# -- stand-in children: real processes speaking the protocol ----------------------------------------------
FINISH = """
import os, signal, sys
sys.stdout.write('{"type": "progress", "total": 2, "done": {"succeeded": 1}, "throttled": 0, "retries": 0}\\n')
sys.stderr.write("bulkconn: warning: shared\\n")
mode = sys.argv[1]
if mode == "crash":
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdout.write('{"type": "final", "counts": {"succeeded": 2}, "tenants": 1}\\n')
sys.exit(int(mode))
"""

WAIT_FOR_STOP = """
import signal, sys, threading
got = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: got.set())
sys.stderr.write("ready\\n"); sys.stderr.flush()
got.wait(30)
sys.stdout.write('{"type": "final", "counts": {}, "interrupted": true}\\n')
sys.exit(130 if got.is_set() else 99)
"""


def stand_in(index: int, count: int, script: str, *args: str) -> ShardCommand:
    spec = ShardSpec(index, count)
    return ShardCommand(spec, Path(f"r{index}"), (sys.executable, "-c", script, *args))


@pytest.mark.e2e
async def test_a_crashed_child_does_not_stop_the_others_and_every_end_is_known() -> None:
    """Three children: finished (0), finished with failures (1), killed: the parent follows each to its end."""
    messages: list[tuple[str, str]] = []
    ticks: list[Progress] = []
    commands = [stand_in(0, 3, FINISH, "0"), stand_in(1, 3, FINISH, "1"), stand_in(2, 3, FINISH, "crash")]
    outcome = await run_shards(
        commands,
        env=os.environ,
        on_tick=ticks.append,
        on_message=lambda spec, text: messages.append((str(spec), text)),
        tick_s=0.01,
        install_signals=False,
    )
    assert [run.state for run in outcome.runs] == ["finished", "finished", "crashed"]
    assert outcome.runs[2].returncode == -signal.SIGKILL and outcome.runs[2].final is None
    assert not outcome.interrupted
    assert sorted(messages) == [(f"{k}/3", "bulkconn: warning: shared") for k in range(3)]
    assert ticks and ticks[-1].total == 6 and ticks[-1].finished == 3


@pytest.mark.e2e
async def test_the_parents_ctrl_c_reaches_every_child_once_as_sigterm() -> None:
    """SIGINT to the parent: each child (in its own process group) gets one SIGTERM, drains and exits 130."""
    ready: set[str] = set()

    def on_message(spec: ShardSpec, text: str) -> None:
        ready.add(str(spec))
        if len(ready) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C would reach the parent

    outcome = await run_shards(
        [stand_in(0, 2, WAIT_FOR_STOP), stand_in(1, 2, WAIT_FOR_STOP)], env=os.environ, on_message=on_message
    )
    assert outcome.signalled and outcome.interrupted
    assert [(run.state, run.returncode) for run in outcome.runs] == [("interrupted", 130)] * 2


def ended(index: int, code: int, *, signalled: bool = False, error: str = "") -> ShardRun:
    run = shard_run(index)
    run.returncode, run.signalled, run.last_error = code, signalled, error
    run.take(final_record(RunResult(report=run.command.report, counts=Counter(succeeded=1), tenants=1)))
    return run


@pytest.mark.parametrize(
    ("codes", "signalled", "exit_code", "says"),
    [
        ([0, 2], False, 2, "shard(s) 1/2 refused to run"),
        (
            [-signal.SIGKILL, 0],
            False,
            6,
            "shard 0/2 crashed (killed by SIGKILL); resume it alone with:\n  bulkconn run job.jsonl --shard 0/2 --report r0.jsonl --resume --backup",
        ),
        ([70, 0], False, 6, "shard 0/2 crashed (exit code 70: boom)"),
        (
            [130, -signal.SIGTERM],
            True,
            130,
            "  bulkconn run job.jsonl --report merged.jsonl --resume --processes 2 --backup\n",
        ),
    ],
)
def test_the_parent_says_how_the_shards_ended_and_merges_nothing_unfinished(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    codes: list[int],
    signalled: bool,
    exit_code: int,
    says: str,
) -> None:
    """A refusal exits 2; a crash names the shard and its own resume command (exit 6); Ctrl-C exits 130, one command."""
    outcome = ProcessesResult(
        [ended(k, code, signalled=signalled, error="boom") for k, code in enumerate(codes)], signalled, 1.0
    )
    commands = RunCommands(Path("job.jsonl"), Path("merged.jsonl"), None, ("--processes", "2", "--backup"))
    with contextlib.chdir(tmp_path):
        assert _conclude(outcome, commands) == exit_code
        assert not Path("merged.jsonl").exists()
    err = capsys.readouterr().err
    assert says in err
    assert err.count("bulkconn run job.jsonl --report merged.jsonl --resume") <= 1
