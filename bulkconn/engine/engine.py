"""The bulk engine: per-tenant lanes, pacing, batching, retries, and one outcome per operation.

Each tenant has a :class:`~bulkconn.engine.lane.Lane` (its operations, retry queue, pacer and workers).
Workers take a batch from their lane, wait for the lane's pacer, then for a global in-flight slot (a FIFO
semaphore, so lanes take turns: a tenant with 3 operations is not held back by one with 100,000).
Two operations on the same object never fly at once, and keep their job order.

What happens to each answer is decided by :func:`bulkconn.retry.decide`; the engine carries it out.
Failures of single operations are outcomes, never exceptions. A tenant whose credentials or
permissions fail is quarantined: its remaining operations end ``failed`` and the others carry on.
Time comes from the injected :class:`~bulkconn.transport.Clock`, the network from the :class:`Transport`.

A run that reads first (``EngineSettings.read_first``: ``--skip-unchanged``, ``--backup``, undo lines) reads a
batch's objects before writing them (:mod:`bulkconn.engine.reading`); a pre-image goes to ``on_backup``, which
makes it durable, before the write is sent.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from bulkconn.auth import TokenProvider
from bulkconn.batching import MAX_BATCH
from bulkconn.config import TenantConfig
from bulkconn.engine.dispatch import dispatch, new_request_id
from bulkconn.engine.lane import Lane, OpState, read_chunk
from bulkconn.engine.reading import ReadFirst, Skip, after_read, read_url
from bulkconn.errors import AuthError, JobChanged
from bulkconn.jobscan import JobScan
from bulkconn.lanereader import LaneReader
from bulkconn.learning import Learned
from bulkconn.model import ErrorInfo, Operation, Outcome, Progress, Status, utc_now
from bulkconn.pacing import GLOBAL_PER_APP, GLOBAL_WINDOW_S, Pacers, Pacing, heard
from bulkconn.retry import Answer, Done, Retry, RetryPolicy, decide, succeeded
from bulkconn.slots import Slots
from bulkconn.transport import Clock, LoopClock, Transport

if TYPE_CHECKING:  # reads are imported when a job reads first (--skip-unchanged, --backup, expect)
    from bulkconn.precheck import Backup
    from bulkconn.reads import Read


class EngineSettings(Struct, frozen=True, kw_only=True):
    batch_size: int = MAX_BATCH
    concurrency: int = 16  # requests in flight across all tenants
    tenant_concurrency: int | None = None  # overrides each tenant's own `concurrency`
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int | None = None  # jitter seed, for reproducible tests
    read_first: ReadFirst = field(default_factory=ReadFirst)
    # Graph's global limit per app across all tenants, and this process's share of it (shards of one app split it).
    global_share: float = 1.0
    global_per_window: int = GLOBAL_PER_APP
    global_window_s: float = GLOBAL_WINDOW_S


class Engine:
    """Runs a scanned job to the end, calling ``on_outcome`` once per operation."""

    def __init__(
        self,
        *,
        tenants: dict[str, TenantConfig],
        auth: TokenProvider,
        transport: Transport,
        settings: EngineSettings,
        on_outcome: Callable[[Outcome], None],
        on_intent: Callable[[Operation], None] = lambda op: None,
        on_backup: Callable[[Backup], None] = lambda backup: None,
        clock: Clock | None = None,
        progress: Progress | None = None,
        pacer_factory: Callable[[TenantConfig, Clock], Pacing] | None = None,
    ) -> None:
        self.tenants = tenants
        self.clock = clock or LoopClock()
        self.auth = auth
        self.transport = transport
        self.settings = settings
        self.on_outcome = on_outcome
        self.on_intent = on_intent
        self.on_backup = on_backup
        self.progress = Progress(started=self.clock.now()) if progress is None else progress
        self.stopping = asyncio.Event()
        self._waiting: set[asyncio.Task[Any]] = set()  # workers waiting in _unless_stopped
        self._stopped_waits: set[asyncio.Task[Any]] = set()  # ... of which stop() cancelled the wait
        self.auth_failures: dict[str, ErrorInfo] = {}
        self.job_changed: JobChanged | None = None  # why the run stopped by itself, if the job changed under it
        self._slots = Slots(settings.concurrency)
        self._rng = random.Random(settings.seed)
        self._lanes: dict[str, Lane] = {}
        self._noted: dict[str, Learned] = {}  # the limit last shown per tenant (see _note_limit)
        self._wakers: set[asyncio.Task[None]] = set()
        self._pacer_factory = pacer_factory or Pacers(
            global_share=settings.global_share,
            global_per_window=settings.global_per_window,
            global_window_s=settings.global_window_s,
            batch_size=settings.batch_size,
        )

    def stop(self) -> None:
        """Start nothing new; operations in flight finish and are recorded."""
        self.stopping.set()
        waiting, self._waiting = self._waiting, set()
        for worker in waiting:  # see _unless_stopped
            self._stopped_waits.add(worker)
            worker.cancel()
        for lane in self._lanes.values():
            task = asyncio.get_running_loop().create_task(self._wake(lane))
            self._wakers.add(task)
            task.add_done_callback(self._wakers.discard)

    async def _wake(self, lane: Lane) -> None:
        async with lane.cond:
            lane.cond.notify_all()

    async def run(self, scan: JobScan) -> Progress:
        """Send every valid operation of ``scan``; return the counters."""
        self.progress.total += scan.operations
        readers = {alias: LaneReader(scan, alias) for alias in scan.offsets}
        scan.kept.clear()  # each reader took its tenant's; what is left belongs to no lane (another shard's tenants)
        try:
            async with asyncio.TaskGroup() as group:
                chunk = read_chunk(len(readers))  # the read-ahead budget, shared by the lanes
                for alias, reader in readers.items():
                    tenant = self.tenants[alias]
                    pacer = self._pacer_factory(tenant, self.clock)
                    lane = self._lanes[alias] = Lane(tenant, reader, clock=self.clock, pacer=pacer, chunk=chunk)
                    self._note_limit(lane)
                    workers = self.settings.tenant_concurrency or tenant.concurrency
                    for _ in range(workers):
                        group.create_task(self._guarded(lane))
        finally:
            for reader in readers.values():
                reader.close()
        return self.progress

    # -- workers -----------------------------------------------------------------------------------
    async def _guarded(self, lane: Lane) -> None:
        """A worker; a job that changed under the run stops it as a Ctrl-C would (what is in flight is recorded)."""
        try:
            await self._worker(lane)
        except JobChanged as exc:
            self.job_changed = self.job_changed or exc
            self.stop()

    async def _worker(self, lane: Lane) -> None:
        needed = self.settings.read_first.needed
        while True:
            size = self.settings.batch_size
            limit = min(lane.pacer.max_batch, size) if size > 1 else size  # max_batch is never below 1
            batch = await lane.take(limit, self.stopping)
            if batch is None:
                if lane.quarantine is not None:
                    await self._fail_all(lane)
                return
            try:
                reading = [s for s in batch if not s.read_done and needed(s.op)]
                to_write = await self._read_first(lane, batch, reading) if reading else batch
                if to_write is None or (to_write and not await self._write(lane, to_write)):
                    return
            finally:
                await lane.release(batch)

    async def _write(self, lane: Lane, batch: list[OpState]) -> bool:
        """Send ``batch``'s writes once pacing, a token and a global slot allow; False when the run stopped first."""
        while True:
            # A single write the pacer lets go at once (nearly every one) is asked here, without _paced's coroutine.
            if not (len(batch) == 1 and lane.pacer.ready(writes=1)) and not await self._paced(lane, batch):
                return False
            # The token first: a slow identity service must not hold one of the global slots.
            token = await self._token(lane)
            await self._slots.take()
            try:
                if self.stopping.is_set():
                    return False
                # Counted as sent only now, in the slot: a wait for a slot never hides in the pacer's log. Another
                # worker of the lane may have taken the room meanwhile; then wait again.
                sent_at = lane.pacer.take(writes=len(batch)) if token is not None else self.clock.now()
                if sent_at is not None:
                    await self._send(lane, batch, token, sent_at)
                    return True
            finally:
                self._slots.give_back()

    async def _paced(self, lane: Lane, batch: list[OpState] | None = None, *, reads: int = 0) -> bool:
        """Wait until the pacer lets ``batch``'s writes (or ``reads`` reads) go; False when the run stopped first.

        A batch larger than what fits now gives the rest back to the lane, for another worker, in order: after
        every wait, as each answer changes what fits (a probe, a lower limit learned since the batch was taken).
        A stop while we wait drops the batch unsent (it is redone on resume).
        """
        while True:
            if batch is not None and len(batch) > 1 and len(batch) > (fits := lane.pacer.max_batch):
                await lane.give_back(batch[fits:])
                del batch[fits:]
            writes = len(batch) if batch is not None else 0
            if lane.pacer.ready(writes=writes, reads=reads):
                return True
            if not await self._unless_stopped(lane.pacer.wait(writes=writes, reads=reads)):
                return False

    def _note_limit(self, lane: Lane) -> None:
        """Show the write limit the tenant's pacer paces to now (learned from 429s, or configured)."""
        limit = lane.pacer.limit
        if self._noted.get(lane.tenant.alias) is not limit:  # after every request: most leave it as it was
            self._noted[lane.tenant.alias] = limit
            self.progress.limit_by_tenant[lane.tenant.alias] = (limit.per_window, limit.window_s)

    async def _read_first(self, lane: Lane, batch: list[OpState], reading: list[OpState]) -> list[OpState] | None:
        """Read the objects of ``reading`` (those of the batch not read yet that must be) and settle them; the states
        of the batch to write now (None: stopped)."""
        needed = self.settings.read_first.needed
        while True:
            if not await self._paced(lane, reads=len(reading)):
                return None
            token = await self._token(lane)
            if token is None:
                assert lane.quarantine is not None
                for state in batch:
                    self._finish(state, Status.FAILED, lane.quarantine)
                return []
            await self._slots.take()
            try:
                if self.stopping.is_set():
                    return None
                sent_at = lane.pacer.take(writes=0, reads=len(reading))
                if sent_at is not None:
                    reads = await self._get(lane, reading, token, sent_at)
                    break
            finally:
                self._slots.give_back()
        cap_s = self.settings.policy.retry_after_cap_s
        lane.pacer.heard(heard([r.answer for r in reads], sent_at=sent_at, reads=True, retry_after_cap_s=cap_s))
        for state, read in zip(reading, reads, strict=True):
            await self._settle_read(lane, state, read, token)
        return [s for s in batch if s.read_done or not needed(s.op)]

    async def _get(self, lane: Lane, reading: list[OpState], token: str, sent_at: float) -> list[Read]:
        """GET the objects of ``reading`` in one request (a single GET or a ``$batch``)."""
        from bulkconn.reads import get_objects

        client_request_id = new_request_id()
        for state in reading:
            state.begin_read(sent_at, client_request_id)
        return await get_objects(
            self.transport,
            lane.tenant,
            [read_url(s.op) for s in reading],
            token=token,
            client_request_id=client_request_id,
            fresh_connection=any([s.take_fresh_connection() for s in reading]),
        )

    async def _settle_read(self, lane: Lane, state: OpState, read: Read, token: str) -> None:
        """Retry, fail, skip, or (after recording a backup) mark ``state`` ready to write."""
        state.answered(read.answer.status, read.request_id)
        decision = decide(
            read.answer,
            state.read_attempt(self.clock.now()),
            tenant=lane.tenant.alias,
            policy=self.settings.policy,
            rng=self._rng,
        )
        if isinstance(decision, Retry):
            await self._retry(lane, state, decision, token)
        elif not decision.succeeded or read.body is None:
            if decision.quarantine is not None:
                self._quarantine(lane, decision.quarantine)
            self._finish(state, Status.FAILED, decision.error)
        elif isinstance(then := after_read(state.op, read.body, self.settings.read_first), Skip):
            self._finish(state, Status.SKIPPED, None, reason=ErrorInfo(then.reason.code.value, then.reason.message))
        else:
            if then.backup is not None:
                self.on_backup(then.backup)
            state.read_done = True

    async def _unless_stopped(self, waiting: Coroutine[Any, Any, None]) -> bool:
        """Await ``waiting`` unless the run is stopped first (then it is cancelled, and False returned).

        Without a task per wait (workers wait many times per second while a tenant starts): :meth:`stop` cancels
        the workers waiting here, and each takes back the cancellation the stop caused (``uncancel``); any
        other cancellation goes on up.
        """
        if self.stopping.is_set():
            waiting.close()
            return False
        worker = asyncio.current_task()
        assert worker is not None
        self._waiting.add(worker)
        try:
            await waiting
        except asyncio.CancelledError:
            if worker not in self._stopped_waits:
                raise
            self._stopped_waits.discard(worker)
            if worker.uncancel() > 0:  # cancelled by something else as well
                raise
            return False
        finally:
            self._waiting.discard(worker)
        return not self.stopping.is_set()

    async def _fail_all(self, lane: Lane) -> None:
        """End every remaining operation of a quarantined lane as failed, with the reason."""
        error = lane.quarantine
        assert error is not None
        async with lane.cond:
            states = lane.drain()
            while lane.reader.remaining:
                states.extend(OpState(op) for op in await asyncio.to_thread(lane.reader.read, lane.chunk))
        for state in states:
            self._finish(state, Status.FAILED, error)

    def _finish(self, state: OpState, status: Status, error: ErrorInfo | None, reason: ErrorInfo | None = None) -> None:
        outcome = state.outcome(status, error, now=self.clock.now(), finished_at=utc_now())
        outcome.reason = reason
        self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        reason = outcome.reason
        self.progress.record(outcome.tenant, outcome.status, reason=reason.code if reason else "")
        self.on_outcome(outcome)

    async def _token(self, lane: Lane) -> str | None:
        try:
            return await self.auth.token(lane.tenant.alias)
        except AuthError as exc:
            self._quarantine(lane, ErrorInfo(exc.code, exc.describe()))
            return None

    def _quarantine(self, lane: Lane, error: ErrorInfo) -> None:
        if lane.quarantine is None:
            lane.quarantine = error
            self.auth_failures[lane.tenant.alias] = error

    async def _send(self, lane: Lane, batch: list[OpState], token: str | None, sent_at: float) -> None:
        client_request_id = new_request_id()
        fresh = False
        for state in batch:
            fresh = state.begin_attempt(sent_at, client_request_id) or fresh  # every flag is taken
            if not state.op.idempotent:  # a sync, a wipe...: recorded first, so a resume never sends it twice
                self.on_intent(state.op)
        if token is None:
            assert lane.quarantine is not None
            for state in batch:
                self._finish(state, Status.FAILED, lane.quarantine)
            return
        sent = await dispatch(
            self.transport,
            lane.tenant,
            [state.op for state in batch],
            token=token,
            client_request_id=client_request_id,
            fresh_connection=fresh,
        )
        # The pacer hears the answer before any operation is re-queued, so a retry waits for its cool-down.
        cap_s = self.settings.policy.retry_after_cap_s
        lane.pacer.heard(heard(sent.answers, sent_at=sent_at, retry_after_cap_s=cap_s))
        self._note_limit(lane)
        now, finished_at = self.clock.now(), utc_now()
        done: list[Outcome] = []  # succeeded, not yet recorded: tallied together, reported in the batch's order
        for state, answer, request_id in zip(batch, sent.answers, sent.request_ids, strict=True):
            state.answered(answer.status, request_id)
            if succeeded(answer.status):  # nearly every answer: what decide() says, without its inputs
                done.append(state.outcome(Status.SUCCEEDED, None, now=now, finished_at=finished_at))
            else:
                self._record_succeeded(lane, done)
                await self._settle(lane, state, answer, token)
        self._record_succeeded(lane, done)

    def _record_succeeded(self, lane: Lane, done: list[Outcome]) -> None:
        """What :meth:`_record` does for each of ``done`` (successes: no reason), with one tally; then empty it."""
        if done:
            for outcome in done:
                self.on_outcome(outcome)
            self.progress.record_succeeded(lane.tenant.alias, len(done))  # counted once reported
            done.clear()

    async def _settle(self, lane: Lane, state: OpState, answer: Answer, token: str) -> None:
        """Carry out the decision for one operation's answer."""
        alias = lane.tenant.alias
        decision = decide(
            answer,
            state.attempt(self.clock.now()),
            tenant=alias,
            policy=self.settings.policy,
            rng=self._rng,
        )
        if isinstance(decision, Done):
            if decision.quarantine is not None:
                self._quarantine(lane, decision.quarantine)
            self._finish(state, decision.status, decision.error)
            return
        await self._retry(lane, state, decision, token)

    async def _retry(self, lane: Lane, state: OpState, decision: Retry, token: str) -> None:
        """Re-queue ``state`` at the decision's time (after a fresh token when asked); the pacer holds it back."""
        alias = lane.tenant.alias
        self.progress.retries += 1
        if decision.reauthenticate:
            await self.auth.invalidate(alias, token)
        if decision.throttled:
            self.progress.record_throttled(alias)
        state.will_retry(decision)
        lane.schedule_retry(state, self.clock.now() + decision.after_s)
