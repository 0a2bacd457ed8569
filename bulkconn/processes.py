"""All cores of one machine: the shards of a job as child processes (``bulkconn run JOB --processes N``).

Each child is a real ``bulkconn run JOB --shard K/N --report R`` (see ``docs/scale-out.md``), so a child is
exactly what a Kubernetes pod or any scheduler would run, and a crash of one is a crash of one shard only.

The parent and its children talk through pipes (the child's side is :mod:`bulkconn.childpipe`): the child's
**stdout** carries its progress and final lines, its **stderr** (messages, warnings, a traceback if it crashes)
is handed to the parent line by line, and its **stdin** stays open and silent until the parent ends.

Children run in their own process group, so a Ctrl-C in the terminal reaches the parent only; the parent
forwards each SIGINT/SIGTERM to every child once (the first drains, a second stops at once), as if the
user had pressed Ctrl-C in each shard's own terminal. It forwards SIGTERM whatever it received: a child
may have inherited an ignored SIGINT (a shell's background job), and before a child's run has begun, the
default SIGTERM simply ends it, which is right as it has sent nothing. Nothing here prints: the CLI
renders the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkconn.childpipe import PROGRESS_FLAG
from bulkconn.errors import UsageError
from bulkconn.model import Progress
from bulkconn.runner import RunResult
from bulkconn.shards import ShardSpec

STREAM_LIMIT = 1 << 24  # bytes per stdout line: a final line lists every tenant of the shard
STOP_GRACE_S = 30.0  # after the parent itself fails: how long children may drain before they are killed
# Child exit codes that mean "the run ended and its report has a summary" (docs/scale-out.md).
FINISHED, REFUSED, INTERRUPTED = frozenset({0, 1, 3}), 2, 130


# -- the parent's view of one child ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShardCommand:
    """How to start one shard: its spec, its report and the full command line."""

    spec: ShardSpec
    report: Path
    argv: tuple[str, ...]


@dataclass(slots=True)
class ShardRun:
    """What the parent knows of one child: its latest counters, its final line and how it exited."""

    command: ShardCommand
    progress: Progress = field(default_factory=Progress)
    final: dict[str, Any] | None = None
    returncode: int | None = None
    last_error: str = ""  # the last line it wrote to stderr
    signalled: bool = False  # the parent forwarded a stop signal to it

    @property
    def state(self) -> str:
        """``running``, ``finished``, ``interrupted``, ``refused`` (a usage error: nothing sent) or ``crashed``."""
        code = self.returncode
        if code is None:
            return "running"
        if code in FINISHED:
            return "finished"
        if code == INTERRUPTED or (self.signalled and code == -signal.SIGTERM):
            return "interrupted"
        if code == REFUSED:
            return "refused"
        return "crashed"

    def take(self, raw: bytes) -> None:
        """Read one stdout line; a line that is not the protocol is ignored (a child never writes one)."""
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(raw)
            if not isinstance(record, dict):
                return
            if record.get("type") == "progress":
                self.progress.total = int(record.get("total", 0))
                self.progress.done = Counter(record.get("done") or {})
                self.progress.throttled = int(record.get("throttled", 0))
                self.progress.retries = int(record.get("retries", 0))
                self.progress.skip_reasons = Counter(record.get("skip_reasons") or {})
            elif record.get("type") == "final":
                self.final = record


def combined_progress(runs: Sequence[ShardRun], *, started: float) -> Progress:
    """The sum of every child's latest counters, for one display."""
    total = Progress(started=started)
    for run in runs:
        total.total += run.progress.total
        total.done.update(run.progress.done)
        total.throttled += run.progress.throttled
        total.retries += run.progress.retries
        total.skip_reasons.update(run.progress.skip_reasons)
    return total


@dataclass(slots=True)
class ProcessesResult:
    """Every child's end, and whether the parent forwarded a stop signal."""

    runs: list[ShardRun]
    signalled: bool
    duration_s: float

    def of_state(self, state: str) -> list[ShardRun]:
        return [run for run in self.runs if run.state == state]

    @property
    def interrupted(self) -> bool:
        return self.signalled or bool(self.of_state("interrupted"))

    def combined(self, report: Path) -> RunResult:
        """One :class:`RunResult` for the summary: this run's counts and tenants over every child."""
        result = RunResult(report=report, interrupted=self.interrupted, duration_s=self.duration_s)
        for run in self.runs:
            final = run.final or {}
            result.counts.update(final.get("counts") or {})
            for tenant, counts in (final.get("per_tenant") or {}).items():
                result.per_tenant.setdefault(tenant, Counter()).update(counts)
            result.skip_reasons.update(final.get("skip_reasons") or {})
            result.conflicts_by_tenant.update(final.get("conflicts_by_tenant") or {})
            result.auth_failures.update(final.get("auth_failures") or {})
            result.identity_unreachable += final.get("identity_unreachable") or []
            result.not_sent.update(final.get("not_sent") or {})
            result.tenants += int(final.get("tenants") or 0)
        result.nothing_to_do = all((run.final or {}).get("nothing_to_do") for run in self.runs)
        return result


# -- running the children --------------------------------------------------------------------------------
async def _start(command: ShardCommand, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    # Own process group (POSIX): a terminal's Ctrl-C reaches the parent only, which forwards it once.
    group: dict[str, Any] = {} if sys.platform == "win32" else {"process_group": 0}
    try:
        return await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            limit=STREAM_LIMIT,
            **group,
        )
    except OSError as exc:
        raise UsageError(f"cannot start shard {command.spec}: {exc.strerror or exc}") from exc


async def _follow(
    run: ShardRun, proc: asyncio.subprocess.Process, on_message: Callable[[ShardSpec, str], None]
) -> None:
    """Read a child's two streams to their end, then its exit status."""

    async def lines(stream: asyncio.StreamReader | None, take: Callable[[bytes], None]) -> None:
        if stream is not None:
            async for raw in stream:
                take(raw)

    def message(raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if text:
            run.last_error = text
            on_message(run.command.spec, text)

    async with asyncio.TaskGroup() as group:
        group.create_task(lines(proc.stdout, run.take))
        group.create_task(lines(proc.stderr, message))
    run.returncode = await proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()  # the child has ended: closing tells it nothing any more


def _signal_all(procs: Sequence[asyncio.subprocess.Process], sig: int) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


async def _stop_all(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """The parent is failing: let every child drain (SIGTERM), kill the ones that do not end in time."""
    _signal_all(procs, signal.SIGTERM)
    waits = [proc.wait() for proc in procs if proc.returncode is None]
    if waits:
        _, pending = await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=STOP_GRACE_S)
        if pending:
            _signal_all(procs, signal.SIGKILL)
            await asyncio.wait(pending)


@contextlib.contextmanager
def _forwarding(on_signal: Callable[[], None], *, install: bool) -> Iterator[None]:
    """SIGINT and SIGTERM of the parent call ``on_signal`` inside the block (POSIX, when ``install``)."""
    if not install or sys.platform == "win32":
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_shards(
    commands: Sequence[ShardCommand],
    *,
    env: Mapping[str, str],
    on_tick: Callable[[Progress], None] = lambda p: None,
    on_message: Callable[[ShardSpec, str], None] = lambda spec, text: None,
    tick_s: float = 0.5,
    install_signals: bool = True,
) -> ProcessesResult:
    """Start every shard, follow them to their end, forward stop signals; return how each one ended.

    A child that crashes does not stop the others. Raises :class:`UsageError` if a child cannot be started.
    """
    started = time.monotonic()
    runs = [ShardRun(command) for command in commands]
    procs: list[asyncio.subprocess.Process] = []
    signalled = False

    def forward() -> None:
        nonlocal signalled
        signalled = True
        for run in runs:
            run.signalled = True
        _signal_all(procs, signal.SIGTERM)

    try:
        for command in commands:
            procs.append(await _start(command, env))
        with _forwarding(forward, install=install_signals):
            await _tick_until(
                asyncio.gather(*(_follow(r, p, on_message) for r, p in zip(runs, procs, strict=True))),
                lambda: on_tick(combined_progress(runs, started=started)),
                tick_s,
            )
    except BaseException:
        await asyncio.shield(_stop_all(procs))
        raise
    return ProcessesResult(runs, signalled, time.monotonic() - started)


async def _tick_until(work: Awaitable[Any], tick: Callable[[], None], tick_s: float) -> None:
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=tick_s)
        tick()
    await task


# -- naming ----------------------------------------------------------------------------------------------
def shard_reports(merged: Path, count: int) -> list[Path]:
    """The shard reports next to the merged report: ``X.report.jsonl`` -> ``X.shard-K-of-N.report.jsonl``.

    For the default report ``JOB.report.jsonl`` these are the default names of ``run --shard K/N``.
    """
    stem = merged.name.removesuffix(".jsonl").removesuffix(".report")
    return [merged.with_name(f"{stem}.shard-{k}-of-{count}.report.jsonl") for k in range(count)]


def shard_commands(
    job: Path, merged: Path, count: int, *, options: Sequence[str], prefix: Sequence[str] = ()
) -> list[ShardCommand]:
    """One ``python -m bulkconn [prefix] run JOB --shard K/N --report R [options]`` per shard."""
    commands = []
    for k, report in enumerate(shard_reports(merged, count)):
        spec = ShardSpec(k, count)
        argv = (
            sys.executable,
            "-m",
            "bulkconn",
            *prefix,
            "run",
            str(job),
            "--shard",
            str(spec),
            "--report",
            str(report),
            PROGRESS_FLAG,
            *options,
        )
        commands.append(ShardCommand(spec, report, argv))
    return commands
