"""A FIFO semaphore that hands a freed slot straight to the longest waiter: the engine's global in-flight slots, and
the identity calls' gate (:mod:`bulkconn.callgate`, which adds slots while calls are slow).

``asyncio.Semaphore`` (Python 3.11) wakes a waiter by scanning its queue for one not yet woken, and each woken
waiter stays in the queue until it runs: with hundreds of workers waiting for 64 slots, most of a request's
semaphore cost is that scan. Here a release pops the first waiter and gives it the slot, so a slot never
passes to a newcomer while someone waits (the same fairness: lanes take turns) and each hand-over is O(1).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``limit`` slots; :meth:`take` waits for one (first come, first served), :meth:`give_back` frees it."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()  # a hand-over pops its waiter; see give_back

    @property
    def waiting(self) -> bool:
        """Whether someone waits for a slot (a cancelled waiter not yet gone may count for a moment)."""
        return bool(self._waiters)

    @property
    def free(self) -> int:
        """Slots nobody holds (never more than 0 while someone waits)."""
        return self._free

    async def take(self) -> None:
        """Hold a slot: at once if one is free and nobody waits, else when the waiters before us have had theirs."""
        if self._free:  # free slots and waiters never coexist: give_back hands a slot to a waiter first
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed a slot as we were cancelled: the next waiter has it
            elif waiter in self._waiters:  # (a hand-over may have dropped it already, see give_back)
                self._waiters.remove(waiter)
            raise

    def give_back(self) -> None:
        """Free a slot held: the longest waiter still waiting has it now, else it is free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # done: cancelled, its task not yet run to take itself off
                waiter.set_result(None)
                return
        self._free += 1
