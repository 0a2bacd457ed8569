"""The engine's global in-flight slots: never more held than there are, first come first served, and a waiter
cancelled at any moment neither loses a slot for good nor keeps one."""

from __future__ import annotations

import asyncio

import pytest

from bulkconn.slots import Slots


class _Holders:
    """Tasks that each take a slot, note it, and give it back when told; the most held at once is kept."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.held = self.most = 0

    def start(self, name: str) -> None:
        self.gates[name] = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._hold(name)))

    async def _hold(self, name: str) -> None:
        await self.slots.take()
        self.order.append(name)
        self.held += 1
        self.most = max(self.most, self.held)
        await self.gates[name].wait()
        self.held -= 1
        self.slots.give_back()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_get_slots_in_the_order_they_asked_and_never_more_than_there_are() -> None:
    holders = _Holders(Slots(2))
    for name in "abcde":
        holders.start(name)
    await _settle()
    assert holders.order == ["a", "b"]
    holders.gates["b"].set()
    await _settle()
    assert holders.order == ["a", "b", "c"]
    holders.start("late")  # behind d and e, however the slots come back
    for name in ("a", "c", "d", "e", "late"):
        holders.gates[name].set()
        await _settle()
    await asyncio.gather(*holders.tasks)
    assert holders.order == ["a", "b", "c", "d", "e", "late"]
    assert holders.most == 2 and holders.slots.free == 2


async def test_a_newcomer_does_not_take_a_slot_handed_to_a_waiter() -> None:
    slots = Slots(1)
    await slots.take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give_back()  # handed to the waiter, not freed
    assert slots.free == 0
    late = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    assert waiter.done() and not late.done()
    slots.give_back()
    await late
    slots.give_back()
    assert slots.free == 1


@pytest.mark.parametrize("handed", [False, True], ids=["while-waiting", "just-handed-a-slot"])
async def test_a_cancelled_waiter_passes_its_turn_on(handed: bool) -> None:
    """Cancelled while waiting: it leaves the queue. Cancelled just as a slot was handed to it: the slot goes on to
    the next waiter. Either way every slot comes back."""
    slots = Slots(1)
    await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    if handed:
        slots.give_back()  # first has the slot, but has not run yet
    first.cancel()
    if not handed:
        slots.give_back()  # first's future is cancelled and still queued: skipped
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot reached the second waiter
    slots.give_back()
    assert slots.free == 1
