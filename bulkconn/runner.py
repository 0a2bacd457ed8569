"""One run: scan the job, open the report, run the engine, handle signals, write the summary.

The CLI and the tests both call :func:`execute` (``--dry-run`` is :mod:`bulkconn.dryrun`). Nothing here prints; the
caller gets a :class:`RunResult` and a live :class:`~bulkconn.model.Progress` through ``on_tick``. The run's
resources (report, transport, token provider) live in one ``AsyncExitStack``; every outcome, whether an
invalid line, a sync settled by a resume or an engine result, goes through one ``record`` into one tally.

A job with selector lines is expanded after the header and before the lanes start (:mod:`bulkconn.listing`): its
records are fsynced before the first write, and a resumed run takes the expansion its report already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from msgspec import Struct, field, structs

from bulkconn import __version__
from bulkconn.auth import MsalTokenProvider, TokenProvider
from bulkconn.config import Config
from bulkconn.engine import Engine, EngineSettings
from bulkconn.engine.lane import read_chunk
from bulkconn.errors import IDENTITY_UNREACHABLE, JobError, UsageError
from bulkconn.jobline import Invalid
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.lock import ReportLock
from bulkconn.model import NO_TENANT, ErrorInfo, Outcome, Progress, Status, reached, utc_now
from bulkconn.report import format as fmt
from bulkconn.report.writer import ReportWriter
from bulkconn.signals import interrupts
from bulkconn.transport import USER_AGENT, AiohttpTransport, Transport

if TYPE_CHECKING:  # imported where used: a plain run (no selector lines, resume, shard or --backup) needs none
    from bulkconn.expansion import RecordedExpansion
    from bulkconn.precheck import Backup
    from bulkconn.report.reader import ReportState
    from bulkconn.shards import Partition, ShardSpec

STRICT_PREVIEW = 20  # invalid lines quoted when --strict refuses a job
PROBLEMS_KEPT = 20  # outcomes that did not succeed, kept for the end-of-run message


class StrictRefusal(JobError):
    """``--strict`` found invalid lines, so nothing was sent; the first few travel with the error."""

    def __init__(self, file: str, invalid: int, problems: tuple[Invalid, ...]) -> None:
        super().__init__(f"{invalid} invalid line(s); --strict sends nothing", file=file)
        self.invalid, self.problems = invalid, problems


class RunResult(Struct):
    report: Path
    nothing_to_do: bool = False  # a resume found every operation already final; the report is untouched
    counts: Counter[str] = field(default_factory=Counter)
    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    auth_failures: dict[str, str] = field(default_factory=dict)
    identity_unreachable: list[str] = field(default_factory=list)  # tenants whose identity service never answered
    not_sent: Counter[str] = field(default_factory=Counter)  # per tenant: failed with its auth failure, not problems
    tenants: int = 0
    interrupted: bool = False
    skipped_from_report: int = 0  # already final in the report: a resume did not redo them
    skipped_by_tenant: dict[str, int] = field(default_factory=dict)
    skip_reasons: Counter[str] = field(default_factory=Counter)  # this run's skips by reason (Unchanged, Conflict)
    conflicts_by_tenant: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    problems: list[Outcome] = field(default_factory=list)  # the first PROBLEMS_KEPT outcomes that did not reach it
    stopped_because: str = ""  # a run that stopped by itself says why (the job changed while running)


class RunOptions(Struct, frozen=True, kw_only=True):
    report: Path
    settings: EngineSettings = field(default_factory=EngineSettings)
    strict: bool = False
    drain_timeout_s: float = 5.0
    tick_s: float = 0.5
    skip_keys: Container[str] = frozenset()
    resumed: bool = False
    prefill: tuple[Outcome, ...] = ()  # results to record first (syncs left uncertain by a crash)
    expansion: RecordedExpansion | None = None  # what the resumed report selected (None: nothing)
    shard: ShardSpec | None = None  # run only this shard's tenants (docs/scale-out.md)
    resume_header: Mapping[str, Any] | None = None  # the first header of the report being resumed
    resumed_state: ReportState | None = None  # that report as the resume read it (final counts read only the rest)


def invalid_outcome(item: Invalid) -> Outcome:
    return Outcome.invalid(
        key=item.key,
        line=item.line,
        tenant=item.tenant,
        object_id=item.object_id,
        action=item.action,
        message=item.message,
    )


async def strict_check(
    job: Path, config: Config, limit: int = 20, *, skip_keys: Container[str] = frozenset(), positions: bool = True
) -> tuple[JobScan, list[Invalid]]:
    """Scan without writing anything; return the scan and up to ``limit`` invalid lines (``positions``: scan_job's)."""
    problems: list[Invalid] = []

    def keep(item: Invalid) -> None:
        if len(problems) < limit:
            problems.append(item)

    scan = await asyncio.to_thread(
        scan_job, job, list(config.tenants), on_invalid=keep, skip_keys=skip_keys, positions=positions
    )
    return scan, problems


# -- the run ----------------------------------------------------------------------------------------------
def _settings_json(options: RunOptions) -> dict[str, Any]:
    s = options.settings
    return {
        "batch_size": s.batch_size,
        "concurrency": s.concurrency,
        "tenant_concurrency": s.tenant_concurrency,
        "policy": structs.asdict(s.policy),
        "strict": options.strict,
        "skip_unchanged": s.read_first.skip_unchanged,
        "backup": s.read_first.backup,
        "force": s.read_first.force,
        "global_share": s.global_share,
    }


def _to_list(scan: JobScan, options: RunOptions) -> bool:
    """Whether a selector line still has something to list (listing is imported only for a job with selectors)."""
    if not scan.selectors:
        return False
    from bulkconn.listing import to_list

    return bool(to_list(scan, _recorded(options), options.skip_keys))


def _recorded(options: RunOptions) -> RecordedExpansion:
    """What the resumed report selected, if anything (imported with the selector modules, when a job has them)."""
    from bulkconn.expansion import RecordedExpansion

    return RecordedExpansion() if options.expansion is None else options.expansion


def _scope(scan: JobScan, options: RunOptions, invalid_by_tenant: Counter[str]) -> tuple[JobScan, Partition | None]:
    """The part of the job this run owns (all of it unless sharded), once a resumed report is known to be its own.

    Raises :class:`~bulkconn.errors.ResumeError` when the report being resumed belongs to another shard, N or job.
    """
    spec = options.shard
    if spec is None and options.resume_header is None:
        return scan, None  # a fresh unsharded run: nothing to check, and the shard module stays unimported
    from bulkconn.shards import check_resume, operation_counts, partition, restrict

    plan = None if spec is None else partition(operation_counts(scan), spec.count, job_sha256=scan.sha256)
    if options.resume_header is not None:
        check_resume(options.resume_header, spec, plan, report=options.report)
    if spec is None or plan is None:
        return scan, None
    invalid = sum(n for tenant, n in invalid_by_tenant.items() if plan.owns(spec.index, tenant))
    return restrict(scan, plan, spec.index, invalid=invalid), plan


def user_agent(shard: ShardSpec | None) -> str:
    """bulkconn's User-Agent; a shard adds ``shard/K-of-N`` so that the service side can tell shards apart."""
    return USER_AGENT if shard is None else f"{USER_AGENT} shard/{shard.index}-of-{shard.count}"


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
    lock: ReportLock | None = None,
) -> RunResult:
    """Run ``job`` to the end (or until interrupted) and return what happened.

    The run holds the report's lock (:class:`~bulkconn.lock.ReportLock`) from before it writes anything
    until it ends: ``lock`` is the caller's, already held (a resume takes it before it reads the report),
    else it is taken here; a report held by another run raises :class:`~bulkconn.lock.ReportInUse`.
    The job is validated first, in one pass, before the report is touched: ``--strict`` can then refuse
    it, and a resume with nothing left to do appends nothing. Invalid lines wait in a spool file (as
    report lines) until the header is written, so even a job of a million bad lines is not held in memory.
    """
    async with contextlib.AsyncExitStack() as held:
        # What is alive now lives as long as the run (every module, the configuration; then the scan and the
        # operations it kept): out of the cyclic collector's way, its full collections stop walking all of it
        # (tens of milliseconds each, the first during the scan). Given back at the end: nothing frozen outlives it.
        gc.freeze()
        held.callback(gc.unfreeze)
        if lock is None:
            lock = await held.enter_async_context(ReportLock(options.report))
        elif not lock.held or lock.report != options.report:
            raise RuntimeError("execute() needs the lock of its own report, held")
        return await _execute(job, config, options, auth, transport, on_tick, on_scanned, install_signals)


async def _execute(
    job: Path,
    config: Config,
    options: RunOptions,
    auth: TokenProvider | None,
    transport: Transport | None,
    on_tick: Callable[[Progress], None],
    on_scanned: Callable[[JobScan], None],
    install_signals: bool,
) -> RunResult:
    result = RunResult(report=options.report)
    started = time.monotonic()
    with tempfile.TemporaryFile() as spool:
        preview: list[Invalid] = []
        invalid_by_tenant: Counter[str] = Counter()

        def spool_invalid(item: Invalid) -> None:
            if len(preview) < STRICT_PREVIEW:
                preview.append(item)
            invalid_by_tenant[item.tenant] += 1
            spool.write(fmt.encode(fmt.result(invalid_outcome(item))))

        scan = await asyncio.to_thread(
            scan_job,
            job,
            list(config.tenants),
            on_invalid=spool_invalid,
            skip_keys=options.skip_keys,
            keep=read_chunk(len(config.tenants)),  # each lane's first read-ahead, without reading the job again
        )
        if options.expansion is not None:
            scan.expansion = options.expansion.groups  # what a resume already selected
        scan.skip_keys = options.skip_keys
        if options.strict and scan.invalid:  # the whole job, so that every shard refuses it alike
            raise StrictRefusal(str(job), scan.invalid, tuple(preview))
        scan, shards = _scope(scan, options, invalid_by_tenant)
        on_scanned(scan)
        unlisted = _to_list(scan, options)
        if options.resumed and not (scan.operations or unlisted or scan.invalid or options.prefill):
            result.nothing_to_do = True
            return result
        spool.seek(0)
        run = _Run(job, config, options, scan, result, started, shards)
        return await run.execute(spool, auth, transport, on_tick, install_signals)


class _Run:
    """One run's state: the report, the one tally (a :class:`Progress`) and the result being built."""

    def __init__(
        self,
        job: Path,
        config: Config,
        options: RunOptions,
        scan: JobScan,
        result: RunResult,
        started: float,
        shards: Partition | None,
    ) -> None:
        self.job, self.config, self.options, self.scan = job, config, options, scan
        self.result, self.started, self.shards = result, started, shards
        self.progress = Progress()
        self.writer: ReportWriter | None = None
        self.quarantines: Mapping[str, ErrorInfo] = {}  # the engine's, once it runs: tenant -> why it stopped

    def owns(self, tenant: str) -> bool:
        """Whether this run records lines of ``tenant`` (an invalid line's tenant may be no tenant at all)."""
        spec = self.options.shard
        return spec is None or self.shards is None or self.shards.owns(spec.index, tenant)

    def record(self, outcome: Outcome) -> None:
        """Tally one final outcome and append its report line (the engine tallies its own as it finishes them)."""
        tenant = outcome.tenant if outcome.tenant in self.config.tenants else NO_TENANT  # an invalid line's
        self.progress.record(tenant, outcome.status, reason=_reason(outcome))
        self.progress.total += 1
        self.on_outcome(outcome)

    def on_outcome(self, outcome: Outcome) -> None:
        """Append a final result to the report; keep the first few that did not reach the asked state to show."""
        assert self.writer is not None
        self.writer.result(outcome)
        if outcome.status is Status.SUCCEEDED:
            return  # nearly every line: nothing to show
        if outcome.error is not None and outcome.error == self.quarantines.get(outcome.tenant):
            self.result.not_sent[outcome.tenant] += 1  # the terminal says the tenant's reason once, not per operation
        elif not reached(outcome.status, _reason(outcome)) and len(self.result.problems) < PROBLEMS_KEPT:
            self.result.problems.append(outcome)

    async def execute(
        self,
        spool: IO[bytes],
        auth: TokenProvider | None,
        transport: Transport | None,
        on_tick: Callable[[Progress], None],
        install_signals: bool,
    ) -> RunResult:
        async with contextlib.AsyncExitStack() as stack:
            gc.freeze()  # the scan and the operations it kept, too (see execute)
            self.writer = stack.enter_context(self._open_report())
            stack.callback(self._write_summary)  # runs before the report closes, also after Ctrl-C or a crash
            if transport is None:
                transport = await stack.enter_async_context(AiohttpTransport(user_agent=user_agent(self.options.shard)))
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
                if self.owns(record["tenant"]):
                    self.record(fmt.outcome_of(record))  # type: ignore[arg-type]
            self.result.skipped_from_report = self.scan.skipped
            self.result.skipped_by_tenant = dict(self.scan.skipped_by_tenant)
            self.result.tenants = len(self.scan.offsets)
            if self.scan.selectors:
                await self._expand(transport, auth)
            engine = Engine(
                tenants=dict(self.config.tenants),
                auth=auth,
                transport=transport,
                settings=self.options.settings,
                on_outcome=self.on_outcome,
                on_intent=self.writer.intent,
                on_backup=self._backup,
                progress=self.progress,
            )
            self.quarantines = engine.auth_failures
            self.result.interrupted = await _run_with_signals(engine, self.scan, self.options, on_tick, install_signals)
            self.result.auth_failures = {t: f"{e.code}: {e.message}" for t, e in engine.auth_failures.items()}
            self.result.identity_unreachable = sorted(
                t for t, e in engine.auth_failures.items() if e.code == IDENTITY_UNREACHABLE
            )
            self.result.stopped_because = str(engine.job_changed or "")
            on_tick(engine.progress)
        return self.result

    async def _expand(self, transport: Transport, auth: TokenProvider) -> None:
        """List and record what the selector lines select (what the report does not hold yet)."""
        from bulkconn.listing import expand
        from bulkconn.reads import Reads

        settings = self.options.settings
        reads = Reads(transport=transport, auth=auth, tenants=self.config.tenants, policy=settings.policy)
        writer = self.writer
        assert writer is not None
        found = await expand(
            self.scan,
            reads,
            recorded=_recorded(self.options),
            on_records=writer.durable,
            skip_keys=self.options.skip_keys,
            concurrency=settings.concurrency,
        )
        for failure in found.failures:
            self.record(failure)

    def _backup(self, backup: Backup) -> None:
        from bulkconn.precheck import backup_record

        assert self.writer is not None
        self.writer.durable([backup_record(backup, at=utc_now())])

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
            shard=self._shard_record(),
        )

    def _shard_record(self) -> fmt.ShardRecord | None:
        spec = self.options.shard
        if self.shards is None or spec is None:
            return None
        from bulkconn.shards import shard_record

        return shard_record(spec, self.shards)

    def _write_summary(self) -> None:
        result = self.result
        result.counts = Counter(self.progress.done)
        result.per_tenant = {tenant: Counter(counts) for tenant, counts in self.progress.per_tenant.items()}
        result.skip_reasons = Counter(self.progress.skip_reasons)
        result.conflicts_by_tenant = Counter(self.progress.conflicts_by_tenant)
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


def _reason(outcome: Outcome) -> str:
    return outcome.reason.code if outcome.reason else ""


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

    handled = interrupts(on_signal, ignore_after=lambda: signals > 0) if install else contextlib.nullcontext()
    with handled:
        while not task.done():
            await asyncio.wait({task}, timeout=options.tick_s)
            on_tick(engine.progress)
        try:
            await task
        except asyncio.CancelledError:
            if signals == 0:
                raise
    return signals > 0 or engine.stopping.is_set()
