"""A tenant's lane: its operations, retry queue, in-flight bookkeeping and pacer.

Operations are read from the job by offset as the lane needs them. Two operations on the same
object are never handed out together; the later one is parked until the earlier one finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque

from msgspec import Struct

from bulkconn.config import TenantConfig
from bulkconn.lanereader import LaneReader
from bulkconn.model import ErrorInfo, Operation, Outcome, Status
from bulkconn.pacing import Pacing
from bulkconn.retry import Attempt, Retry
from bulkconn.transport import Clock

READ_CHUNK = 512  # most operations a lane reads per trip to a thread (each trip costs a thread-pool hand-off)
READ_AHEAD = 32_768  # most operations read ahead by all lanes together: thousands of tenants hold few each
# A run's scan keeps each tenant's first read_chunk operations (JobScan.kept): a lane's first trip for operations
# needs no read of the job (a job of a few hundred operations per tenant is read once), and within the same budget.


def read_chunk(lanes: int) -> int:
    """Operations each of ``lanes`` lanes reads per trip: ``READ_CHUNK``, or its share of ``READ_AHEAD`` if smaller."""
    return max(1, min(READ_CHUNK, READ_AHEAD // max(1, lanes)))


class OpState(Struct, gc=False):  # gc=False: see model.Operation
    """One operation on its way through the engine; changed only through the methods below."""

    op: Operation
    attempts: int = 0
    throttled: int = 0
    started: float = 0.0
    fresh_connection: bool = False
    last_status: int | None = None
    request_id: str = ""
    client_request_id: str = ""
    auth_retried: bool = False
    answers_500: int = 0
    reads: int = 0  # GETs of its object before writing it (read-first runs); not counted in ``attempts``
    read_done: bool = False  # read and decided: a retried write is not read again

    def begin_read(self, now: float, client_request_id: str) -> None:
        """Count a read about to be sent (it starts the operation's clock, as a first send would)."""
        self.started = self.started or now
        self.reads += 1
        self.client_request_id = client_request_id

    def read_attempt(self, now: float) -> Attempt:
        """The history a read's retry decision needs (a GET is idempotent)."""
        return Attempt(
            number=self.reads, elapsed_s=now - self.started, idempotent=True, reauthenticated=self.auth_retried
        )

    def begin_attempt(self, now: float, client_request_id: str) -> bool:
        """Count an attempt about to be sent (the first one starts the operation's clock); whether it must use a new
        connection, as :meth:`take_fresh_connection` says (taken here: one call per operation sent)."""
        self.started = self.started or now
        self.attempts += 1
        self.client_request_id = client_request_id
        fresh, self.fresh_connection = self.fresh_connection, False
        return fresh

    def take_fresh_connection(self) -> bool:
        """Whether this attempt must use a new connection (asked for once, by the previous decision)."""
        fresh, self.fresh_connection = self.fresh_connection, False
        return fresh

    def answered(self, status: int | None, request_id: str) -> None:
        self.last_status = status
        self.answers_500 += status == 500
        self.request_id = request_id

    def attempt(self, now: float) -> Attempt:
        """The history a retry decision needs."""
        return Attempt(
            number=self.attempts,
            elapsed_s=now - self.started,
            idempotent=self.op.idempotent,
            reauthenticated=self.auth_retried,
            answers_500=self.answers_500,
        )

    def will_retry(self, decision: Retry) -> None:
        self.throttled += int(decision.throttled)
        self.fresh_connection = decision.new_connection
        # Only a 401 right after a re-authentication is final: a later 401 is a new token expiring or revoked.
        self.auth_retried = decision.reauthenticate

    def outcome(self, status: Status, error: ErrorInfo | None, *, now: float, finished_at: str) -> Outcome:
        """The operation's report line."""
        op = self.op
        return Outcome(  # positional (the order of Outcome's fields): once per operation, a third faster
            op.key,
            op.line,
            op.tenant,
            op.object_id,
            str(op.action),
            status,
            self.last_status,
            self.attempts,
            self.throttled,
            error,
            self.request_id,
            self.client_request_id,
            int((now - self.started) * 1000) if self.started else 0,
            finished_at,
        )


class Lane:
    """One tenant's operations, retry queue, in-flight bookkeeping and pacer."""

    def __init__(
        self, tenant: TenantConfig, reader: LaneReader, *, clock: Clock, pacer: Pacing, chunk: int = READ_CHUNK
    ) -> None:
        self.tenant = tenant
        self.reader = reader
        self.clock = clock
        self.pacer = pacer
        self.chunk = chunk  # operations read per trip to a thread (:func:`read_chunk`)
        self.pending: deque[OpState] = deque()
        self.retry: list[tuple[float, int, OpState]] = []
        self.busy: set[str] = set()
        self.parked: dict[str, deque[OpState]] = {}
        self.inflight = 0
        self.cond = asyncio.Condition()
        self.quarantine: ErrorInfo | None = None
        self._seq = itertools.count()

    def schedule_retry(self, state: OpState, at: float) -> None:
        heapq.heappush(self.retry, (at, next(self._seq), state))

    def _pick(self, state: OpState, picked: list[OpState]) -> None:
        oid = state.op.object_id.lower()
        if oid in self.busy:
            self.parked.setdefault(oid, deque()).append(state)
        else:
            self.busy.add(oid)
            picked.append(state)

    async def _refill(self) -> None:
        if not self.pending and self.reader.remaining:
            if self.reader.kept:  # validated by the scan and still in memory: no file read, no trip to a thread
                ops = self.reader.read_kept(self.chunk)
            else:
                ops = await asyncio.to_thread(self.reader.read, self.chunk)
            self.pending.extend(map(OpState, ops))

    async def _pick_batch(self, limit: int) -> list[OpState]:
        """Up to ``limit`` operations to send now: retries that are due first, then the job's, in order."""
        picked: list[OpState] = []
        while self.retry and self.retry[0][0] <= self.clock.now() and len(picked) < limit:
            self._pick(heapq.heappop(self.retry)[2], picked)
        pending, busy = self.pending, self.busy
        while len(picked) < limit:
            if not pending:  # checked here: a call of the coroutine per operation costs
                await self._refill()
                if not pending:
                    break
            state = pending.popleft()
            oid = state.op.object_id.lower()
            if oid in busy:
                self.parked.setdefault(oid, deque()).append(state)
            else:  # nearly every one: _pick, without a call per operation
                busy.add(oid)
                picked.append(state)
        return picked

    def _has_work(self) -> bool:
        return bool(self.pending or self.retry or self.parked or self.reader.remaining or self.inflight)

    async def take(self, limit: int, stopping: asyncio.Event) -> list[OpState] | None:
        """The next batch to send, or None when the lane is finished (or the run is stopping)."""
        async with self.cond:
            while True:
                if stopping.is_set():
                    return None
                if self.quarantine is not None:
                    # Wait for the batches in flight, so that nothing is re-queued after the drain.
                    while self.inflight:
                        await self.cond.wait()
                    return None
                picked = await self._pick_batch(limit)
                if picked:
                    self.inflight += 1
                    return picked
                if not self._has_work():
                    self.cond.notify_all()
                    return None
                timeout = max(self.retry[0][0] - self.clock.now(), 0.0) if self.retry else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.cond.wait(), timeout)

    async def release(self, batch: list[OpState]) -> None:
        async with self.cond:
            self.inflight -= 1
            for state in batch:
                oid = state.op.object_id.lower()
                self.busy.discard(oid)
                waiting = self.parked.get(oid)
                if waiting:
                    self.pending.appendleft(waiting.popleft())
                    if not waiting:
                        del self.parked[oid]
            self.cond.notify_all()

    async def give_back(self, states: list[OpState]) -> None:
        """Put operations taken but not sent back at the front of the queue, in their order."""
        async with self.cond:
            for state in reversed(states):
                self.busy.discard(state.op.object_id.lower())
                self.pending.appendleft(state)
            self.cond.notify_all()

    def drain(self) -> list[OpState]:
        """Every operation not yet sent (for quarantine or a stop)."""
        out = list(self.pending) + [s for _, _, s in self.retry]
        for waiting in self.parked.values():
            out.extend(waiting)
        self.pending.clear()
        self.retry.clear()
        self.parked.clear()
        return out
