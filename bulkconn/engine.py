"""The bulk engine: per-tenant lanes, pacing, batching, retries, and one outcome per operation.

Each tenant has a :class:`Lane` (its operations, retry queue, pacer and workers). Workers take a
batch from their lane, wait for the lane's pacer, then for a global in-flight slot (a FIFO
semaphore, so lanes take turns: a tenant with 3 operations is not held back by one with 100,000).
Two operations on the same object never fly at once, and keep their job order.

Failures of single operations are outcomes, never exceptions. A tenant whose credentials or
permissions fail is quarantined: its remaining operations end ``failed`` and the others carry on.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from bulkconn.auth import TokenProvider
from bulkconn.batching import MAX_BATCH, SubResult, envelope, error_from_body, request_for, unpack
from bulkconn.config import TenantConfig
from bulkconn.errors import AuthError, TransportError
from bulkconn.job import JobScan, LaneReader
from bulkconn.lanes import READ_CHUNK, Lane, OpState
from bulkconn.model import Action, ErrorInfo, Operation, Outcome, Status
from bulkconn.report import utc_now
from bulkconn.retry import Done, Retry, RetryPolicy, classify
from bulkconn.transport import HttpResponse, Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    batch_size: int = MAX_BATCH
    concurrency: int = 16  # requests in flight across all tenants
    tenant_concurrency: int | None = None  # overrides each tenant's own `concurrency`
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    seed: int | None = None  # jitter seed, for reproducible tests


@dataclass(slots=True)
class Progress:
    """Live counters for the progress display."""

    total: int = 0
    done: Counter[str] = field(default_factory=Counter)  # status -> count
    throttled: int = 0
    retries: int = 0
    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    throttled_by_tenant: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return sum(self.done.values())


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
    ) -> None:
        self.tenants = tenants
        self.auth = auth
        self.transport = transport
        self.settings = settings
        self.on_outcome = on_outcome
        self.on_intent = on_intent
        self.progress = Progress()
        self.stopping = asyncio.Event()
        self.auth_failures: dict[str, ErrorInfo] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._rng = random.Random(settings.seed)
        self._lanes: dict[str, Lane] = {}
        self._wakers: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Start nothing new; operations in flight finish and are recorded."""
        self.stopping.set()
        for lane in self._lanes.values():
            task = asyncio.get_running_loop().create_task(self._wake(lane))
            self._wakers.add(task)
            task.add_done_callback(self._wakers.discard)

    async def _wake(self, lane: Lane) -> None:
        async with lane.cond:
            lane.cond.notify_all()

    async def run(self, scan: JobScan) -> Progress:
        """Send every valid operation of ``scan``; return the counters."""
        self.progress.total += scan.valid
        readers = {alias: LaneReader(scan, alias) for alias in scan.offsets}
        try:
            async with asyncio.TaskGroup() as group:
                for alias, reader in readers.items():
                    tenant = self.tenants[alias]
                    lane = self._lanes[alias] = Lane(tenant, reader, self.settings.batch_size)
                    workers = self.settings.tenant_concurrency or tenant.concurrency
                    for _ in range(workers):
                        group.create_task(self._worker(lane))
        finally:
            for reader in readers.values():
                reader.close()
        return self.progress

    # -- workers -----------------------------------------------------------------------------------
    async def _worker(self, lane: Lane) -> None:
        while True:
            limit = min(lane.batch_size, lane.pacer.max_batch, self.settings.batch_size)
            batch = await lane.take(limit, self.stopping)
            if batch is None:
                if lane.quarantine is not None:
                    await self._fail_all(lane)
                return
            try:
                # A stop while we wait for pacing or a slot drops the batch unsent (it is redone on resume).
                if lane.pacer.ready(writes=len(batch)):
                    await lane.pacer.acquire(writes=len(batch))  # returns at once: no need to race a stop
                elif not await self._unless_stopped(lane.pacer.acquire(writes=len(batch))):
                    return
                # The token first: a slow identity service must not hold one of the global slots.
                token = await self._token(lane)
                async with self._slots:
                    if self.stopping.is_set():
                        return
                    await self._send(lane, batch, token)
            finally:
                await lane.release(batch)

    async def _unless_stopped(self, waiting: Coroutine[Any, Any, None]) -> bool:
        """Await ``waiting`` unless the run is stopped first (then cancel it and return False)."""
        task = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stop):
                if not pending.done():
                    pending.cancel()
            await asyncio.gather(task, stop, return_exceptions=True)
        failure = task.exception() if task.done() and not task.cancelled() else None
        if failure is not None:
            raise failure
        return task.done() and not task.cancelled() and not self.stopping.is_set()

    async def _fail_all(self, lane: Lane) -> None:
        """End every remaining operation of a quarantined lane as failed, with the reason."""
        error = lane.quarantine
        assert error is not None
        async with lane.cond:
            states = lane.drain()
            while lane.reader.remaining:
                states.extend(OpState(op) for op in await asyncio.to_thread(lane.reader.read, READ_CHUNK))
        for state in states:
            self._finish(state, Status.FAILED, error)

    def _finish(self, state: OpState, status: Status, error: ErrorInfo | None) -> None:
        op = state.op
        duration = int((time.monotonic() - state.started) * 1000) if state.started else 0
        outcome = Outcome(
            key=op.key,
            line=op.line,
            tenant=op.tenant,
            object_id=op.object_id,
            action=op.action.value,
            status=status,
            http_status=state.last_status,
            attempts=state.attempts,
            throttled=state.throttled,
            error=error,
            request_id=state.request_id,
            client_request_id=state.client_request_id,
            duration_ms=duration,
            finished_at=utc_now(),
        )
        self.progress.done[status.value] += 1
        self.progress.per_tenant.setdefault(op.tenant, Counter())[status.value] += 1
        self.on_outcome(outcome)

    async def _token(self, lane: Lane) -> str | None:
        try:
            return await self.auth.token(lane.tenant.alias)
        except AuthError as exc:
            self._quarantine(
                lane, ErrorInfo(exc.code, f"authentication failed for tenant '{exc.tenant}': {exc.message}")
            )
            return None

    def _quarantine(self, lane: Lane, error: ErrorInfo) -> None:
        if lane.quarantine is None:
            lane.quarantine = error
            self.auth_failures[lane.tenant.alias] = error

    async def _send(self, lane: Lane, batch: list[OpState], token: str | None) -> None:
        loop_now = time.monotonic()
        for state in batch:
            state.started = state.started or loop_now
            state.attempts += 1
            state.client_request_id = str(uuid.uuid4())
            if state.op.action is Action.SYNC:
                self.on_intent(state.op)
        if token is None:
            for state in batch:
                assert lane.quarantine is not None
                self._finish(state, Status.FAILED, lane.quarantine)
            return
        if len(batch) == 1:
            results, request_id = await self._send_single(lane, batch[0], token)
        else:
            results, request_id = await self._send_batch(lane, batch, token)
        for state, result in zip(batch, results, strict=True):
            state.request_id = result.headers.get("request-id", request_id)
            await self._settle(lane, state, result, token)

    async def _send_single(self, lane: Lane, state: OpState, token: str) -> tuple[list[SubResult], str]:
        req = request_for(state.op)
        fresh, state.fresh_connection = state.fresh_connection, False
        try:
            resp = await self.transport.send(
                req.method,
                f"{lane.tenant.graph_root}{req.url}",
                token=token,
                client_request_id=state.client_request_id,
                body=orjson.dumps(req.body),
                ca_bundle=lane.tenant.ca_bundle,
                fresh_connection=fresh,
            )
        except TransportError as exc:
            return [SubResult(None, error=ErrorInfo(exc.code, exc.message))], ""
        return [_as_sub_result(resp)], resp.headers.get("request-id", "")

    async def _send_batch(self, lane: Lane, batch: list[OpState], token: str) -> tuple[list[SubResult], str]:
        fresh = any(s.fresh_connection for s in batch)
        for state in batch:
            state.fresh_connection = False
        client_request_id = batch[0].client_request_id
        try:
            resp = await self.transport.send(
                "POST",
                f"{lane.tenant.graph_root}/$batch",
                token=token,
                client_request_id=client_request_id,
                body=envelope([s.op for s in batch]),
                ca_bundle=lane.tenant.ca_bundle,
                fresh_connection=fresh,
            )
        except TransportError as exc:
            return [SubResult(None, error=ErrorInfo(exc.code, exc.message))] * len(batch), ""
        for state in batch:
            state.client_request_id = client_request_id
        request_id = resp.headers.get("request-id", "")
        if resp.status == 200:
            return unpack(resp.body, len(batch)), request_id
        # The envelope itself failed: every operation shares its answer; a throttled or failing
        # envelope also halves this tenant's batch size.
        if resp.status == 429 or resp.status >= 500:
            lane.batch_size = max(1, lane.batch_size // 2)
        return [_as_sub_result(resp)] * len(batch), request_id

    async def _settle(self, lane: Lane, state: OpState, result: SubResult, token: str) -> None:
        """Record a final outcome or schedule a retry for one operation."""
        state.last_status = result.status
        if result.status == 401 and not state.auth_retried:
            # The token was refused (expired or revoked early): drop it, get a fresh one, retry once at once.
            state.auth_retried = True
            await self.auth.invalidate(lane.tenant.alias, token)
            lane.schedule_retry(state, 0.0)
            self.progress.retries += 1
            return
        if result.status == 403:
            error = result.error or ErrorInfo("Forbidden", "HTTP 403")
            self._quarantine(
                lane, ErrorInfo(error.code, f"permission missing for tenant '{lane.tenant.alias}': {error.message}")
            )
            self._finish(state, Status.FAILED, error)
            return
        decision = classify(
            status=result.status,
            retry_after=result.headers.get("retry-after"),
            error=result.error,
            attempt=state.attempts,
            elapsed_s=time.monotonic() - state.started,
            idempotent=state.op.idempotent,
            policy=self.settings.policy,
            rng=self._rng,
        )
        if isinstance(decision, Done):
            if decision.succeeded:
                lane.pacer.succeeded()
                self._finish(state, Status.SUCCEEDED, None)
            else:
                self._finish(state, Status.UNCERTAIN if decision.uncertain else Status.FAILED, decision.error)
            return
        assert isinstance(decision, Retry)
        self.progress.retries += 1
        if decision.throttled:
            state.throttled += 1
            self.progress.throttled += 1
            self.progress.throttled_by_tenant[lane.tenant.alias] += 1
            lane.pacer.throttled(decision.after_s)
        state.fresh_connection = decision.new_connection
        lane.schedule_retry(state, asyncio.get_running_loop().time() + decision.after_s)


def _as_sub_result(resp: HttpResponse) -> SubResult:
    if 200 <= resp.status < 300:
        return SubResult(resp.status, resp.headers)
    try:
        body = orjson.loads(resp.body) if resp.body else None
    except orjson.JSONDecodeError:
        body = None
    return SubResult(resp.status, resp.headers, error_from_body(body, resp.status))
