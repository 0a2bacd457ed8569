"""Glue for one run: scan the job, open the report, run the engine, handle signals, write the summary.

The CLI and the tests both call :func:`execute`. Nothing here prints; the caller gets a
:class:`RunResult` and a live :class:`Progress` through ``on_tick``.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bulkconn import __version__
from bulkconn.auth import MsalTokenProvider, TokenProvider
from bulkconn.config import Config
from bulkconn.engine import Engine, EngineSettings
from bulkconn.errors import JobError, UsageError
from bulkconn.job import Invalid, JobScan, scan_job
from bulkconn.model import ErrorInfo, Outcome, Progress, Status, utc_now
from bulkconn.report import ReportWriter
from bulkconn.transport import AiohttpTransport

STRICT_PREVIEW = 20  # invalid lines quoted when --strict refuses a job


@dataclass(slots=True)
class RunResult:
    report: Path
    nothing_to_do: bool = False  # a resume found every operation already final; the report is untouched
    counts: Counter[str] = field(default_factory=Counter)
    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    auth_failures: dict[str, str] = field(default_factory=dict)
    tenants: int = 0
    interrupted: bool = False
    skipped_from_report: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    report: Path
    settings: EngineSettings = field(default_factory=EngineSettings)
    strict: bool = False
    drain_timeout_s: float = 5.0
    tick_s: float = 0.5
    skip_keys: Container[str] = frozenset()
    resumed: bool = False
    prefill: tuple[Outcome, ...] = ()  # results to record first (syncs left uncertain by a crash)


def invalid_outcome(item: Invalid) -> Outcome:
    return Outcome(
        key=item.key,
        line=item.line,
        tenant=item.tenant,
        object_id=item.object_id,
        action=item.action or "update",
        status=Status.INVALID,
        error=ErrorInfo("InvalidLine", item.message),
        finished_at=utc_now(),
    )


async def strict_check(job: Path, config: Config, limit: int = 20) -> tuple[JobScan, list[Invalid]]:
    """Scan without writing anything; return the scan and up to ``limit`` invalid lines."""
    problems: list[Invalid] = []

    def keep(item: Invalid) -> None:
        if len(problems) < limit:
            problems.append(item)

    scan = await asyncio.to_thread(scan_job, job, list(config.tenants), on_invalid=keep)
    return scan, problems


def _settings_json(options: RunOptions) -> dict[str, Any]:
    s = options.settings
    return {
        "batch_size": s.batch_size,
        "concurrency": s.concurrency,
        "tenant_concurrency": s.tenant_concurrency,
        "policy": asdict(s.policy),
        "strict": options.strict,
    }


async def execute(
    job: Path,
    config: Config,
    options: RunOptions,
    *,
    auth: TokenProvider | None = None,
    on_tick: Callable[[Progress], None] = lambda p: None,
    on_scanned: Callable[[JobScan], None] = lambda scan: None,
    install_signals: bool = True,
) -> RunResult:
    """Run ``job`` to the end (or until interrupted) and return what happened.

    The job is validated first, in one pass, before the report is touched: ``--strict`` can then refuse
    it, and a resume with nothing left to do appends nothing. Invalid lines wait in a spool file until
    the header is written, so even a job of a million bad lines is not held in memory.
    """
    result = RunResult(report=options.report)
    started = time.monotonic()
    with tempfile.TemporaryFile() as spool:
        preview: list[Invalid] = []

        def spool_invalid(item: Invalid) -> None:
            if len(preview) < STRICT_PREVIEW:
                preview.append(item)
            spool.write(orjson.dumps(invalid_outcome(item).to_json()) + b"\n")

        scan = await asyncio.to_thread(
            scan_job, job, list(config.tenants), on_invalid=spool_invalid, skip_keys=options.skip_keys
        )
        on_scanned(scan)
        if options.strict and scan.invalid:
            raise JobError(
                f"{scan.invalid} invalid line(s); --strict sends nothing:\n" + "\n".join(p.message for p in preview),
                file=str(job),
            )
        if options.resumed and not (scan.valid or scan.invalid or options.prefill):
            result.nothing_to_do = True
            return result
        spool.seek(0)
        return await _execute_scanned(
            job, config, options, scan, spool, result, started, auth, on_tick, install_signals
        )


async def _execute_scanned(
    job: Path,
    config: Config,
    options: RunOptions,
    scan: JobScan,
    spool: IO[bytes],
    result: RunResult,
    started: float,
    auth: TokenProvider | None,
    on_tick: Callable[[Progress], None],
    install_signals: bool,
) -> RunResult:
    try:
        writer = ReportWriter(options.report)
    except OSError as exc:
        raise UsageError(f"{options.report}: cannot write the report: {exc.strerror or exc}") from None
    provider = auth or MsalTokenProvider(config)
    transport = AiohttpTransport()
    try:
        writer.header(
            run_id=str(uuid.uuid4()),
            job=str(job),
            job_sha256=scan.sha256,
            job_bytes=scan.size,
            job_lines=scan.lines,
            bulkconn_version=__version__,
            started_at=utc_now(),
            resumed=options.resumed,
            tenants=sorted(config.tenants),
            settings=_settings_json(options),
        )

        def record(outcome: Outcome) -> None:
            result.counts[outcome.status.value] += 1
            result.per_tenant.setdefault(outcome.tenant or "(none)", Counter())[outcome.status.value] += 1
            writer.result(outcome)

        def record_line(line: dict[str, Any]) -> None:
            result.counts[line["status"]] += 1
            result.per_tenant.setdefault(line["tenant"] or "(none)", Counter())[line["status"]] += 1
            writer.write(line)

        for outcome in options.prefill:
            record(outcome)
        for raw in spool:
            record_line(orjson.loads(raw))
        result.skipped_from_report = scan.skipped
        result.tenants = len(scan.offsets)
        engine = Engine(
            tenants=dict(config.tenants),
            auth=provider,
            transport=transport,
            settings=options.settings,
            on_outcome=record,
            on_intent=writer.intent,
        )
        engine.progress.done.update(result.counts)  # invalid lines and settled syncs are already final
        engine.progress.total = sum(result.counts.values())
        result.interrupted = await _run_with_signals(engine, scan, options, on_tick, install_signals)
        result.auth_failures = {t: f"{e.code}: {e.message}" for t, e in engine.auth_failures.items()}
        on_tick(engine.progress)
    finally:
        result.duration_s = time.monotonic() - started
        writer.summary(
            counts=dict(result.counts),
            interrupted=result.interrupted,
            skipped_from_earlier_runs=result.skipped_from_report,
            auth_failures=result.auth_failures,
            duration_s=round(result.duration_s, 3),
            finished_at=utc_now(),
        )
        writer.close()
        await transport.aclose()
        if isinstance(provider, MsalTokenProvider) and auth is None:
            provider.close()
    return result


async def _run_with_signals(
    engine: Engine, scan: JobScan, options: RunOptions, on_tick: Callable[[Progress], None], install: bool
) -> bool:
    """Run the engine; the first SIGINT/SIGTERM drains (up to the timeout), the second stops at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(engine.run(scan))
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            engine.stop()
            loop.call_later(options.drain_timeout_s, task.cancel)
        else:
            task.cancel()

    if install:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=options.tick_s)
            on_tick(engine.progress)
        try:
            await task
        except asyncio.CancelledError:
            if signals == 0:
                raise
    finally:
        if install:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                if signals:
                    # Already stopping: a further Ctrl-C while the summary is written changes nothing.
                    signal.signal(sig, signal.SIG_IGN)
    return signals > 0 or engine.stopping.is_set()
