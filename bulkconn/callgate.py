"""How many blocking identity calls run at once: a few while they finish quickly, many while they wait on the service.

Every MSAL call runs in a thread of its own. When the identity service answers within milliseconds (on the same
network, or the emulator), the calls are CPU work, and fifty threads runnable at once spend more CPU handing the GIL
to each other than MSAL spends working: tokens for 50 tenants fetched at once cost about 64 ms of CPU with every call
running at once and about 39 ms with 8 at a time (``python -m benchmarks tokens``; ``benchmarks/README.md``). When the
service takes 200 ms to answer, the threads mostly wait, and only many of them keep a thousand tenants from queueing
behind each other.

So :class:`CallGate` starts at :data:`START` calls at once and doubles its limit, up to ``most``, each time a call has
been running for :data:`SLOW_S` while others wait for a slot: slow calls mean waiting on the service, where more at
once is what helps. It never shrinks within a run. Slots are handed over first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque

START = 8  # calls at once before any of them has been slow
SLOW_S = 0.05  # a call running this long is waiting on the service (MSAL's own work takes a millisecond or two)


class CallGate:
    """At most :attr:`limit` callers between :meth:`enter` and :meth:`leave`; the limit grows while calls are slow."""

    __slots__ = ("_busy", "_limit", "_most", "_slow_s", "_waiters")

    def __init__(self, most: int, *, start: int = START, slow_s: float = SLOW_S) -> None:
        self._most = most
        self._limit = max(1, min(start, most))
        self._slow_s = slow_s
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """Calls allowed at once now."""
        return self._limit

    @property
    def busy(self) -> int:
        """Calls between :meth:`enter` and :meth:`leave` now."""
        return self._busy

    async def enter(self) -> asyncio.TimerHandle:
        """Wait for a slot (first come, first served); the handle returned goes back to :meth:`leave`."""
        loop = asyncio.get_running_loop()
        if self._busy < self._limit and not self._waiters:
            self._busy += 1
        else:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the slot is counted in _busy by whoever handed it over
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a slot as we were cancelled: pass it on
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        return loop.call_later(self._slow_s, self._slow)

    def leave(self, handle: asyncio.TimerHandle) -> None:
        """Give the slot taken by :meth:`enter` back."""
        handle.cancel()
        self._release()

    def _slow(self) -> None:
        """A call has run for ``slow_s``: if others wait, allow twice as many at once (up to ``most``)."""
        if self._waiters and self._limit < self._most:
            self._limit = min(self._most, self._limit * 2)
            self._hand_over()

    def _release(self) -> None:
        self._busy -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self._busy < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():  # done: cancelled, its task not yet run to take itself off
                self._busy += 1
                waiter.set_result(None)
