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

from bulkconn.slots import Slots

START = 8  # calls at once before any of them has been slow
SLOW_S = 0.05  # a call running this long is waiting on the service (MSAL's own work takes a millisecond or two)


class CallGate:
    """At most :attr:`limit` callers between :meth:`enter` and :meth:`leave`; the limit grows while calls are slow.

    The slots themselves (first come, first served, cancellation at any moment) are :class:`bulkconn.slots.Slots`;
    growing the limit is giving it more slots, which go to the callers waiting first.
    """

    __slots__ = ("_limit", "_most", "_slots", "_slow_s")

    def __init__(self, most: int, *, start: int = START, slow_s: float = SLOW_S) -> None:
        self._most = most
        self._limit = max(1, min(start, most))
        self._slow_s = slow_s
        self._slots = Slots(self._limit)

    @property
    def limit(self) -> int:
        """Calls allowed at once now."""
        return self._limit

    @property
    def busy(self) -> int:
        """Calls between :meth:`enter` and :meth:`leave` now (free slots and waiters never coexist)."""
        return self._limit - self._slots.free

    async def enter(self) -> asyncio.TimerHandle:
        """Wait for a slot (first come, first served); the handle returned goes back to :meth:`leave`."""
        await self._slots.take()
        return asyncio.get_running_loop().call_later(self._slow_s, self._slow)

    def leave(self, handle: asyncio.TimerHandle) -> None:
        """Give the slot taken by :meth:`enter` back."""
        handle.cancel()
        self._slots.give_back()

    def _slow(self) -> None:
        """A call has run for ``slow_s``: if others wait, allow twice as many at once (up to ``most``)."""
        if self._slots.waiting and self._limit < self._most:
            added = min(self._most, self._limit * 2) - self._limit
            self._limit += added
            for _ in range(added):
                self._slots.give_back()  # to the longest waiters first, the rest stay free
