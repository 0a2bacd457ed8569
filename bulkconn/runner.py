"""One run: scan the job, open the report, run the engine, handle signals, write the summary; and the dry-run plan.

The CLI and the tests both call :func:`execute` (and :func:`plan` for ``--dry-run``). Nothing here prints; the
caller gets a :class:`RunResult` and a live :class:`~bulkconn.model.Progress` through ``on_tick``. The run's
resources (report, transport, token provider) live in one ``AsyncExitStack``; every outcome, whether an
invalid line, a sync settled by a resume or an engine result, goes through one ``record`` into one tally.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bulkconn import __version__
from bulkconn.auth import MsalTokenProvider, TokenProvider
from bulkconn.batching import request_for
from bulkconn.config import Config
from bulkconn.engine import Engine, EngineSettings
from bulkconn.errors import JobError, UsageError
from bulkconn.job import Invalid, JobScan, LaneReader, scan_job
from bulkconn.model import Outcome, Progress, utc_now
from bulkconn.report import format as fmt
from bulkconn.report.writer import ReportWriter
from bulkconn.transport import AiohttpTransport, Transport

STRICT_PREVIEW = 20  # invalid lines quoted when --strict refuses a job
PLAN_EXAMPLES = 3  # requests shown per tenant by --dry-run


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
    return Outcome.invalid(
        key=item.key,
        line=item.line,
        tenant=item.tenant,
        object_id=item.object_id,
        action=item.action,
        message=item.message,
    )


async def strict_check(job: Path, config: Config, limit: int = 20) -> tuple[JobScan, list[Invalid]]:
    """Scan without writing anything; return the scan and up to ``limit`` invalid lines."""
    problems: list[Invalid] = []

    def keep(item: Invalid) -> None:
        if len(problems) < limit:
            problems.append(item)

    scan = await asyncio.to_thread(scan_job, job, list(config.tenants), on_invalid=keep)
    return scan, problems


# -- the --dry-run plan ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlannedRequest:
    line: int
    method: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TenantPlan:
    alias: str
    operations: int
    requests: int
    endpoint: str  # the $batch URL, or the Graph root for single requests
    min_minutes: float  # at the configured write limit (the pacer fills every window to it)
    writes_per_window: int
    window_s: float
    examples: tuple[PlannedRequest, ...]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What ``run`` would send, without sending anything."""

    valid: int
    invalid: int
    problems: tuple[Invalid, ...]
    tenants: tuple[TenantPlan, ...]


async def plan(job: Path, config: Config, *, batch_size: int) -> RunPlan:
    """Validate ``job`` and say, per tenant, how many requests it takes and how long at least."""
    scan, problems = await strict_check(job, config)
    tenants = []
    for alias, offsets in sorted(scan.offsets.items()):
        tenant = config.tenants[alias]
        count = len(offsets)
        reader = LaneReader(scan, alias)
        try:
            ops = await asyncio.to_thread(reader.read, PLAN_EXAMPLES)
        finally:
            reader.close()
        examples = tuple(PlannedRequest(op.line, *_method_url_body(op)) for op in ops)
        tenants.append(
            TenantPlan(
                alias=alias,
                operations=count,
                requests=math.ceil(count / batch_size),
                endpoint=f"{tenant.graph_root}/{'$batch' if batch_size > 1 else '...'}",
                min_minutes=count / (tenant.writes_per_20s / tenant.window_s) / 60,
                writes_per_window=tenant.writes_per_20s,
                window_s=tenant.window_s,
                examples=examples,
            )
        )
    return RunPlan(scan.valid, scan.invalid, tuple(problems), tuple(tenants))


def _method_url_body(op: Any) -> tuple[str, str, dict[str, Any]]:
    req = request_for(op)
    return req.method, req.url, req.body


# -- the run ----------------------------------------------------------------------------------------------
def _settings_json(options: RunOptions) -> dict[str, Any]:
    s = options.settings
    return {
        "batch_size": s.batch_size,
        "concurrency": s.concurrency,
        "tenant_concurrency": s.tenant_concurrency,
        "global_share": s.global_share,
        "policy": asdict(s.policy),
        "strict": options.strict,
    }


async def execute(
    job: Path,
    config: Config,
    options: RunOptions,
    *,
    auth: TokenProvider | None = None,
    transport: Transport | None = None,
    on_tick: Callable[[Progress], None] = lambda p: None,
    on_scanned: Callable[[JobScan], None] = lambda scan: None,
    install_signals: bool = True,
) -> RunResult:
    """Run ``job`` to the end (or until interrupted) and return what happened.

    The job is validated first, in one pass, before the report is touched: ``--strict`` can then refuse
    it, and a resume with nothing left to do appends nothing. Invalid lines wait in a spool file (as
    report lines) until the header is written, so even a job of a million bad lines is not held in memory.
    """
    result = RunResult(report=options.report)
    started = time.monotonic()
    with tempfile.TemporaryFile() as spool:
        preview: list[Invalid] = []

        def spool_invalid(item: Invalid) -> None:
            if len(preview) < STRICT_PREVIEW:
                preview.append(item)
            spool.write(fmt.encode(fmt.result(invalid_outcome(item))))

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
        run = _Run(job, config, options, scan, result, started)
        return await run.execute(spool, auth, transport, on_tick, install_signals)


class _Run:
    """One run's state: the report, the one tally (a :class:`Progress`) and the result being built."""

    def __init__(
        self, job: Path, config: Config, options: RunOptions, scan: JobScan, result: RunResult, started: float
    ) -> None:
        self.job, self.config, self.options, self.scan = job, config, options, scan
        self.result, self.started = result, started
        self.progress = Progress()
        self.writer: ReportWriter | None = None

    def record(self, outcome: Outcome) -> None:
        """Tally one final outcome and append its report line (the engine tallies its own as it finishes them)."""
        self.progress.record(outcome.tenant or "(none)", outcome.status)
        self.progress.total += 1
        assert self.writer is not None
        self.writer.result(outcome)

    async def execute(
        self,
        spool: IO[bytes],
        auth: TokenProvider | None,
        transport: Transport | None,
        on_tick: Callable[[Progress], None],
        install_signals: bool,
    ) -> RunResult:
        async with contextlib.AsyncExitStack() as stack:
            self.writer = stack.enter_context(self._open_report())
            stack.callback(self._write_summary)  # runs before the report closes, also after Ctrl-C or a crash
            if transport is None:
                transport = await stack.enter_async_context(AiohttpTransport())
            if auth is None:
                provider = MsalTokenProvider(self.config)
                stack.callback(provider.close)
                auth = provider
            self.writer.write(self._header())
            for outcome in self.options.prefill:
                self.record(outcome)
            for raw in spool:
                record = fmt.decode(raw)
                assert record is not None and record["type"] == "result"
                self.record(fmt.outcome_of(record))  # type: ignore[arg-type]
            self.result.skipped_from_report = self.scan.skipped
            self.result.tenants = len(self.scan.offsets)
            engine = Engine(
                tenants=dict(self.config.tenants),
                auth=auth,
                transport=transport,
                settings=self.options.settings,
                on_outcome=self.writer.result,
                on_intent=self.writer.intent,
                progress=self.progress,
            )
            self.result.interrupted = await _run_with_signals(engine, self.scan, self.options, on_tick, install_signals)
            self.result.auth_failures = {t: f"{e.code}: {e.message}" for t, e in engine.auth_failures.items()}
            on_tick(engine.progress)
        return self.result

    def _open_report(self) -> ReportWriter:
        try:
            return ReportWriter(self.options.report)
        except OSError as exc:
            raise UsageError(f"{self.options.report}: cannot write the report: {exc.strerror or exc}") from exc

    def _header(self) -> fmt.HeaderRecord:
        return fmt.header(
            run_id=str(uuid.uuid4()),
            job=str(self.job),
            job_sha256=self.scan.sha256,
            job_bytes=self.scan.size,
            job_lines=self.scan.lines,
            bulkconn_version=__version__,
            started_at=utc_now(),
            resumed=self.options.resumed,
            tenants=sorted(self.config.tenants),
            settings=_settings_json(self.options),
        )

    def _write_summary(self) -> None:
        result = self.result
        result.counts = Counter(self.progress.done)
        result.per_tenant = {tenant: Counter(counts) for tenant, counts in self.progress.per_tenant.items()}
        result.duration_s = time.monotonic() - self.started
        assert self.writer is not None
        self.writer.write(
            fmt.summary(
                counts=dict(result.counts),
                interrupted=result.interrupted,
                skipped_from_earlier_runs=result.skipped_from_report,
                auth_failures=result.auth_failures,
                duration_s=round(result.duration_s, 3),
                finished_at=utc_now(),
            )
        )


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

    with _signals_handled(on_signal, install=install, stopping=lambda: signals > 0):
        while not task.done():
            await asyncio.wait({task}, timeout=options.tick_s)
            on_tick(engine.progress)
        try:
            await task
        except asyncio.CancelledError:
            if signals == 0:
                raise
    return signals > 0 or engine.stopping.is_set()


@contextlib.contextmanager
def _signals_handled(on_signal: Callable[[], None], *, install: bool, stopping: Callable[[], bool]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``on_signal`` inside the block (when ``install``)."""
    if not install:
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
            if stopping():
                # Already stopping: a further Ctrl-C while the summary is written changes nothing.
                signal.signal(sig, signal.SIG_IGN)
