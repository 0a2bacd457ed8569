"""Per-tenant pacing under Intune's limits, a shared cool-down after 429, and AIMD on the rate.

Pacing uses aiolimiter's leaky bucket, sized so that no sliding window can see more than the limit.
A naive ``AsyncLimiter(100, 20)`` starts empty and lets ~200 through in the first 20 s (peers.md 6).
A bucket of capacity ``B`` draining at ``r``/s admits at most ``B + r*T`` in any window ``T``, so we pick
``B = min(20, W // 5)`` (one full ``$batch``) and ``r = (0.9*W - B) / T``: at most 90% of the limit
``W`` in any window, leaving room for the jitter between our clock and the service's.

AIMD: every 429 (once per cool-down) halves the tenant's rate factor (down to 10%); each success
adds back a small step, so the full rate returns over about one window of successful writes. A
reduced factor makes each write cost more bucket units and caps the batch size, so it really slows.
"""

from __future__ import annotations

import asyncio
import math

from aiolimiter import AsyncLimiter

SAFETY = 0.9
MIN_FACTOR = 0.1


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
    """A tenant's writes and reads buckets, its cool-down, and its adaptive rate factor."""

    def __init__(self, *, writes_per_window: int, reads_per_window: int, window_s: float) -> None:
        self.writes = Bucket(writes_per_window, window_s)
        self.reads = Bucket(reads_per_window, window_s)
        self.writes_per_window = writes_per_window
        self.factor = 1.0
        self._cooldown_until = 0.0
        self._last_decrease_at = -math.inf

    @property
    def max_batch(self) -> int:
        """The largest batch the current factor lets through in one acquisition."""
        return max(1, math.floor(self.writes.capacity * self.factor))

    def cooldown_remaining_s(self) -> float:
        return max(self._cooldown_until - asyncio.get_running_loop().time(), 0.0)

    async def wait_cooldown(self) -> None:
        # The cool-down can be extended while we sleep, so re-check after each nap.
        while (remaining := self.cooldown_remaining_s()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)

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
        now = asyncio.get_running_loop().time()
        if now >= self._cooldown_until or now - self._last_decrease_at > retry_after_s:
            self.factor = max(MIN_FACTOR, self.factor / 2)
            self._last_decrease_at = now
        self._cooldown_until = max(self._cooldown_until, now + retry_after_s)

    def succeeded(self, count: int = 1) -> None:
        """Additive increase: the full rate comes back over roughly one window of successes."""
        self.factor = min(1.0, self.factor + count * 0.5 / self.writes_per_window)
