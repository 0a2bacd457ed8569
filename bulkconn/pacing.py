"""Per-tenant pacing under Intune's limits: the rate, a shared cool-down after 429, and the batch limit.

The engine talks to a tenant's pacer through a small interface (:class:`Pacing`), so that another pacing
algorithm can replace this one without touching the engine (``Engine(pacer_factory=...)``):

- ``await acquire(writes=n, reads=m)``: wait until ``n`` writes and ``m`` reads may be sent now;
- ``ready(writes=n)``: True when :meth:`Pacer.acquire` would not wait;
- ``throttled(retry_after_s)``: the service answered 429 (pause the tenant, slow down);
- ``succeeded(count)``: ``count`` operations went through (recover speed);
- ``max_batch``: the largest ``$batch`` to send now;
- ``batch_shrunk()``: a whole ``$batch`` envelope was throttled or failed (send smaller batches).

Pacing uses aiolimiter's leaky bucket, sized so that no sliding window can see more than the limit.
A naive ``AsyncLimiter(100, 20)`` starts empty and lets ~200 through in the first 20 s (its bucket starts
with full capacity and drains at the average rate). A bucket of capacity ``B`` draining at ``r``/s admits
at most ``B + r*T`` in any window ``T``, so we pick ``B = min(20, W // 5)`` (one full ``$batch``) and
``r = (0.9*W - B) / T``: at most 90% of the limit ``W`` in any window, leaving room for the jitter between
our clock and the service's (see docs/engine.md).

AIMD: every 429 (once per cool-down) halves the tenant's rate factor (down to 10%); each success adds back
a small step, so the full rate returns over about one window of successful writes. A reduced factor makes
each write cost more bucket units and caps the batch size, so it really slows. A shrunken batch limit
(after a throttled or failing envelope) recovers the same way.

Time: the cool-down is read from the injected :class:`~bulkconn.transport.Clock`; aiolimiter reads the
event loop's clock, which is why the production clock is the loop's (``LoopClock``).
"""

from __future__ import annotations

import math
from typing import Protocol

from aiolimiter import AsyncLimiter

from bulkconn.transport import Clock, LoopClock

SAFETY = 0.9
MIN_FACTOR = 0.1


class Pacing(Protocol):
    """What the engine needs from a tenant's pacer (the interface described in the module docstring)."""

    @property
    def max_batch(self) -> int: ...

    def ready(self, *, writes: int) -> bool: ...

    async def acquire(self, *, writes: int, reads: int = 0) -> None: ...

    def throttled(self, retry_after_s: float) -> None: ...

    def succeeded(self, count: int = 1) -> None: ...

    def batch_shrunk(self) -> None: ...


class Bucket:
    """One leaky bucket for ``per_window`` events per ``window_s`` with the bound described above."""

    def __init__(self, per_window: int, window_s: float) -> None:
        self.capacity = max(1, min(20, per_window // 5))
        usable = max(per_window * SAFETY, self.capacity + 1)
        rate_per_s = (usable - self.capacity) / window_s
        self.limiter = AsyncLimiter(self.capacity, self.capacity / rate_per_s)

    async def acquire(self, amount: float) -> None:
        await self.limiter.acquire(min(amount, self.capacity))


class Pacer:
    """A tenant's writes and reads buckets, its cool-down, its adaptive rate factor and batch limit."""

    def __init__(
        self, *, writes_per_window: int, reads_per_window: int, window_s: float, clock: Clock | None = None
    ) -> None:
        self.writes = Bucket(writes_per_window, window_s)
        self.reads = Bucket(reads_per_window, window_s)
        self.writes_per_window = writes_per_window
        self.factor = 1.0
        self.batch_factor = 1.0
        self._clock = clock or LoopClock()
        self._cooldown_until = 0.0
        self._last_decrease_at = -math.inf

    @property
    def max_batch(self) -> int:
        """The largest batch the current rate factor and batch limit let through in one acquisition."""
        return max(1, math.floor(self.writes.capacity * min(self.factor, self.batch_factor)))

    def cooldown_remaining_s(self) -> float:
        return max(self._cooldown_until - self._clock.now(), 0.0)

    async def wait_cooldown(self) -> None:
        # The cool-down can be extended while we sleep, so re-check after each nap.
        while (remaining := self.cooldown_remaining_s()) > 0:
            await self._clock.sleep(remaining)

    def ready(self, *, writes: int) -> bool:
        """True when :meth:`acquire` for ``writes`` would not wait (no cool-down, room in the bucket)."""
        return self.cooldown_remaining_s() == 0 and self.writes.limiter.has_capacity(
            min(writes / self.factor, self.writes.capacity)
        )

    async def acquire(self, *, writes: int, reads: int = 0) -> None:
        """Wait for the cool-down and for bucket room for ``writes`` writes and ``reads`` reads."""
        await self.wait_cooldown()
        if writes:
            await self.writes.acquire(writes / self.factor)
        if reads:
            await self.reads.acquire(reads)
        await self.wait_cooldown()  # a 429 seen while we waited for room pauses us too

    def throttled(self, retry_after_s: float) -> None:
        """A 429: pause the whole tenant until ``retry_after_s`` from now; lower the rate once per episode."""
        now = self._clock.now()
        if now >= self._cooldown_until or now - self._last_decrease_at > retry_after_s:
            self.factor = max(MIN_FACTOR, self.factor / 2)
            self._last_decrease_at = now
        self._cooldown_until = max(self._cooldown_until, now + retry_after_s)

    def batch_shrunk(self) -> None:
        """A whole ``$batch`` envelope was throttled or failed: halve the batch limit (down to one operation)."""
        self.batch_factor = max(1 / self.writes.capacity, self.batch_factor / 2)

    def succeeded(self, count: int = 1) -> None:
        """Additive increase of the rate and the batch limit: both recover over about one window of successes."""
        step = count * 0.5 / self.writes_per_window
        self.factor = min(1.0, self.factor + step)
        self.batch_factor = min(1.0, self.batch_factor + step)
