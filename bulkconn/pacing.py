"""Per-tenant pacing at the limit: :mod:`bulkconn.limits` driven by the clock, behind a small interface.

The engine talks to a tenant's pacer only through :class:`Pacing`, so that another pacing algorithm can
replace this one without touching the engine (``Engine(pacer_factory=...)``):

- ``max_batch``: the largest ``$batch`` to send next (what fits now, else the batch limit; at least 1);
- ``ready(writes=, reads=)``: True when that many sub-requests may go now;
- ``await wait(writes=, reads=)``: until they may (the shared cool-down after a 429 included), or until an
  answer changed what may go (the caller then looks again);
- ``take(writes=, reads=)``: if they may go now, count them as sent now and return the time, else None.
  Synchronous, so nothing runs between the check and the send: the engine calls it inside its global
  in-flight slot, right before sending, so time spent waiting for a slot never hides in the log;
- ``heard(Heard)``: what the answer said (admitted and refused sub-requests, the raw ``Retry-After``,
  a failed envelope), with the time the request went out;
- ``limit``: the write limit paced to now (learned from 429s, or the configured one), for the display.

:func:`acquire` waits and takes in one go, for callers without a global slot (reads for plan and selectors).
:class:`Pacers` is the default factory: one :class:`Pacer` per tenant over a
:class:`~bulkconn.limits.TenantLimits`, and one :class:`~bulkconn.sendlog.SharedLimit` per app (client id)
for Graph's global limit, shared by every tenant of this process that uses the app. docs/pacing.md explains
the model and the figures measured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from msgspec import Struct

from bulkconn.config import TenantConfig
from bulkconn.learning import Learned
from bulkconn.limits import TenantLimits
from bulkconn.retry import Answer, parse_retry_after
from bulkconn.sendlog import DEFAULT_MARGIN_S, SharedLimit
from bulkconn.transport import Clock, LoopClock

# Graph's global limit: any request per app across all tenants (docs/pacing.md).
GLOBAL_PER_APP = 130_000
GLOBAL_WINDOW_S = 10.0
# Intune's limits for all apps of a tenant: only our own sends are visible, so they never bind below the
# per-app limits configured; the share other apps take is learned from 429s.
TENANT_WRITES_PER_20S = 200
TENANT_REQUESTS_PER_20S = 2000


class Heard(Struct, frozen=True, kw_only=True):
    """What one request's answer told the pacer; counts are sub-requests (a single request counts one)."""

    sent_at: float  # when the request went out (the value :meth:`Pacing.take` returned)
    admitted_writes: int = 0
    admitted_reads: int = 0
    refused_writes: int = 0  # answered 429
    refused_reads: int = 0
    retry_after_s: float | None = None  # the longest Retry-After of the 429s (the pause); None when none had one
    tightest_retry_after_s: float | None = None  # the shortest (the best bound on the window)
    tightest_is_date: bool = False  # the shortest was an HTTP date: whole seconds, up to one late
    envelope_refused: bool = False  # the whole $batch envelope was answered 429
    envelope_failed: bool = False  # the whole envelope was answered 429 or 5xx: send smaller batches
    writes: bool = True  # a write request (False: reads only)


def heard(
    answers: Sequence[Answer], *, sent_at: float, reads: bool = False, retry_after_cap_s: float | None = None
) -> Heard:
    """Summarise one request's answers (one per operation) for the pacer; ``reads``: they were GETs.

    A 429 is refused; any other HTTP answer was admitted by the throttling (it counts in the service's windows);
    no answer at all is neither. ``Retry-After`` is parsed raw (None when absent), capped at ``retry_after_cap_s``.
    """
    if len(answers) == 1 and answers[0].status not in (None, 429) and not answers[0].whole_envelope:
        # Nearly every single request: one answer, admitted, nothing more to say (what the loop below finds).
        return Heard(sent_at=sent_at, admitted_writes=0 if reads else 1, admitted_reads=int(reads), writes=not reads)
    raw: list[str | None] = []  # the Retry-After of each 429
    admitted = 0
    envelope_failed = False
    for answer in answers:  # one pass: once per request, over up to 20 answers
        if answer.status == 429:
            raw.append(answer.headers.get("retry-after"))
        elif answer.status is not None:
            admitted += 1
        if answer.whole_envelope:
            envelope_failed = envelope_failed or answer.envelope_failed
    waits = sorted((w, not _is_number(text)) for text in raw if (w := parse_retry_after(text)) is not None)
    longest, shortest = (waits[-1][0], waits[0][0]) if waits else (None, None)
    if longest is not None and retry_after_cap_s is not None:
        longest = min(longest, retry_after_cap_s)
    whole = bool(answers) and answers[0].whole_envelope
    return Heard(
        sent_at=sent_at,
        admitted_writes=0 if reads else admitted,
        admitted_reads=admitted if reads else 0,
        refused_writes=0 if reads else len(raw),
        refused_reads=len(raw) if reads else 0,
        retry_after_s=longest,
        tightest_retry_after_s=shortest,
        tightest_is_date=bool(waits) and waits[0][1],
        envelope_refused=whole and answers[0].status == 429,
        envelope_failed=envelope_failed,
        writes=not reads,
    )


def _is_number(text: str | None) -> bool:
    """Whether a Retry-After value is seconds (whole or fractional) rather than an HTTP date."""
    try:
        float(text or "")
    except ValueError:
        return False
    return True


class Pacing(Protocol):
    """What the engine needs from a tenant's pacer (the interface described in the module docstring)."""

    @property
    def max_batch(self) -> int: ...

    @property
    def limit(self) -> Learned: ...

    def ready(self, *, writes: int, reads: int = 0) -> bool: ...

    async def wait(self, *, writes: int, reads: int = 0) -> None: ...

    def take(self, *, writes: int, reads: int = 0) -> float | None: ...

    def heard(self, answer: Heard) -> None: ...


async def acquire(pacer: Pacing, *, writes: int, reads: int = 0) -> float:
    """Wait until ``writes`` writes and ``reads`` reads may go, count them as sent, and return the send time."""
    while (sent_at := pacer.take(writes=writes, reads=reads)) is None:
        await pacer.wait(writes=writes, reads=reads)
    return sent_at


class Pacer:
    """A tenant's :class:`~bulkconn.limits.TenantLimits` on a :class:`~bulkconn.transport.Clock`."""

    def __init__(self, limits: TenantLimits, *, clock: Clock | None = None) -> None:
        self.limits = limits
        self._clock = clock or LoopClock()
        self._waiters: list[asyncio.Future[None]] = []  # woken by the next answer heard

    @property
    def max_batch(self) -> int:
        """What fits in every window now (a batch sized to go at once), else the batch limit (to wait for)."""
        return self.limits.room(self._clock.now()) or self.limits.max_batch

    @property
    def limit(self) -> Learned:
        return self.limits.learner.current

    def ready(self, *, writes: int, reads: int = 0) -> bool:
        now = self._clock.now()
        return self.limits.earliest_send_at(now, writes=writes, reads=reads) <= now

    async def wait(self, *, writes: int, reads: int = 0) -> None:
        """Until the requests may go, or an answer changed what may go (then the caller looks again: the batch it
        holds may no longer fit, and a smaller one may go at once)."""
        now = self._clock.now()
        at = self.limits.earliest_send_at(now, writes=writes, reads=reads)
        if at <= now:
            return
        # A future and a timer rather than wait_for on an Event: workers wait here many times per second while a
        # tenant starts (one request in flight), and wait_for costs a task per wait.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(at - now, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):  # an answer heard meanwhile took the list already
                self._waiters.remove(waiter)

    def take(self, *, writes: int, reads: int = 0) -> float | None:
        now = self._clock.now()
        if self.limits.earliest_send_at(now, writes=writes, reads=reads) > now:
            return None
        self.limits.record_send(now, writes=writes, reads=reads)
        return now

    def heard(self, answer: Heard) -> None:
        """Learn from an answer: 429s teach the limit and pause the tenant, successes let it probe upwards."""
        now = self._clock.now()
        if answer.writes:
            self.limits.answered()
        if answer.refused_writes or answer.refused_reads:
            self.limits.throttled(
                now,
                sent_at=answer.sent_at,
                refused=answer.refused_writes,
                refused_reads=answer.refused_reads,
                retry_after_s=answer.retry_after_s,
                tightest_retry_after_s=answer.tightest_retry_after_s,
                tightest_is_date=answer.tightest_is_date,
                envelope=answer.envelope_refused,
            )
        elif answer.envelope_failed:
            self.limits.shrink_batch(now)
        if answer.admitted_writes:
            self.limits.succeeded(now, sent_at=answer.sent_at)
        # What may go when has changed (sooner after a probe holds or a search ends): waiters look again.
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                _wake(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def margin_for(window_s: float) -> float:
    """The time margin on a window: latency spread, 0.25 s, but never more than 5 % of a short (test) window."""
    return min(DEFAULT_MARGIN_S, window_s / 20)


class Pacers:
    """The default pacer factory: a :class:`Pacer` per tenant, and Graph's global limit shared per app.

    Every tenant configured with the same ``client_id`` shares one :class:`~bulkconn.sendlog.SharedLimit` of
    ``global_share`` x ``global_per_window`` requests per ``global_window_s``: several processes (shards) using
    the same app each take a share, so that together they stay under the limit.
    """

    def __init__(
        self,
        *,
        global_share: float = 1.0,
        global_per_window: int = GLOBAL_PER_APP,
        global_window_s: float = GLOBAL_WINDOW_S,
        batch_size: int = 20,
    ) -> None:
        self.global_limit = max(1, int(global_per_window * global_share))
        self.global_window_s = global_window_s
        self.batch_size = batch_size
        self.shared: dict[str, SharedLimit] = {}

    def __call__(self, tenant: TenantConfig, clock: Clock) -> Pacer:
        shared = self.shared.get(tenant.client_id)
        if shared is None:
            shared = self.shared[tenant.client_id] = SharedLimit(
                per_window=self.global_limit,
                window_s=self.global_window_s,
                margin_s=margin_for(self.global_window_s),
            )
        limits = TenantLimits(
            writes_per_window=tenant.writes_per_20s,
            tenant_writes_per_window=max(TENANT_WRITES_PER_20S, tenant.writes_per_20s),
            any_per_window=tenant.reads_per_20s,
            tenant_any_per_window=max(TENANT_REQUESTS_PER_20S, tenant.reads_per_20s),
            window_s=tenant.window_s,
            margin_s=margin_for(tenant.window_s),
            batch_size=self.batch_size,
            shared=shared,
        )
        return Pacer(limits, clock=clock)
