"""The identity calls' gate: a few at once while calls finish quickly, twice as many each time one is slow while others
wait, never more than its most, first come first served, and a caller cancelled at any moment loses no slot for good.

Virtual time (tests/fakes.py): the gate's "slow" timer fires when the loop's clock passes it, never by sleeping."""

from __future__ import annotations

import asyncio

from bulkconn.callgate import CallGate
from tests.fakes import run_virtual


class _Calls:
    """Tasks that each pass the gate, note it, and leave when told; the most inside at once is kept."""

    def __init__(self, gate: CallGate) -> None:
        self.gate = gate
        self.order: list[int] = []
        self.done: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.inside = self.most = 0

    def start(self, *names: int) -> None:
        for name in names:
            self.done[name] = asyncio.Event()
            self.tasks[name] = asyncio.create_task(self._call(name))

    async def _call(self, name: int) -> None:
        slot = await self.gate.enter()
        self.order.append(name)
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.done[name].wait()
        finally:
            self.inside -= 1
            self.gate.leave(slot)

    def finish(self, *names: int) -> None:
        for name in names:
            self.done[name].set()


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _slow_calls(gate: CallGate, n: int) -> tuple[int, int]:
    """``n`` calls that take a second (virtual): (how many are inside after it, the most inside at once), after
    every call has finished."""
    calls = _Calls(gate)
    calls.start(*range(n))
    await asyncio.sleep(1.0)
    await _settle()
    inside = calls.inside
    calls.finish(*range(n))
    while calls.inside or len(calls.order) < n:
        await _settle()
    return inside, calls.most


def test_quick_calls_never_raise_the_limit() -> None:
    """Forty calls, each finished before it has run for slow_s: never more than START (8) at once, in arrival order."""

    async def scenario() -> tuple[int, int, list[int]]:
        gate = CallGate(128, start=8, slow_s=0.05)
        calls = _Calls(gate)
        calls.start(*range(40))
        loop = asyncio.get_running_loop()
        while len(calls.order) < 40 or calls.inside:
            await _settle()
            calls.finish(*[n for n in calls.order if not calls.done[n].is_set()])
            await asyncio.sleep(0.01)  # virtual: each round of calls takes 10 ms, under slow_s
        assert loop.time() < 1.0
        return gate.limit, calls.most, calls.order

    limit, most, order = run_virtual(scenario())
    assert (limit, most) == (8, 8)
    assert order == list(range(40))


def test_slow_calls_with_others_waiting_double_the_limit_up_to_its_most() -> None:
    """Forty calls that do not finish (a service taking its time): after slow_s the 8 running double the limit
    until all forty run at once (under the most of 64), and no sooner than slow_s."""

    async def scenario() -> tuple[list[int], int]:
        gate = CallGate(64, start=8, slow_s=0.05)
        calls = _Calls(gate)
        calls.start(*range(40))
        await _settle()
        seen = [calls.inside]
        await asyncio.sleep(0.049)
        seen.append(calls.inside)
        await asyncio.sleep(0.002)
        await _settle()
        seen.append(calls.inside)
        calls.finish(*range(40))
        await _settle()
        return seen, gate.limit

    seen, limit = run_virtual(scenario())
    assert seen == [8, 8, 40]
    assert limit == 64


def test_the_limit_grows_only_while_someone_waits() -> None:
    """Ten slow calls, 8 at once: the first slow timer doubles the limit to 16 and lets the 2 waiting in; the other
    timers find nobody waiting and leave it at 16."""

    gate = CallGate(128, start=8, slow_s=0.05)
    inside, _ = run_virtual(_slow_calls(gate, 10))
    assert (inside, gate.limit) == (10, 16)


def test_the_limit_stops_at_its_most() -> None:
    """200 slow calls with a most of 32: 32 at once, however many doublings the slow timers ask for."""

    assert run_virtual(_slow_calls(CallGate(32, start=8, slow_s=0.05), 200)) == (32, 32)


def test_a_slow_call_without_anyone_waiting_leaves_the_limit_alone() -> None:
    """Three slow calls under a limit of 8: nobody waits, so there is nothing to gain from more at once."""

    async def scenario() -> int:
        gate = CallGate(128, start=8, slow_s=0.05)
        calls = _Calls(gate)
        calls.start(0, 1, 2)
        await asyncio.sleep(1.0)
        calls.finish(0, 1, 2)
        await _settle()
        return gate.limit

    assert run_virtual(scenario()) == 8


def test_a_caller_cancelled_while_waiting_or_just_handed_a_slot_passes_it_on() -> None:
    """Limit 1: a waiter cancelled in the queue is skipped; one cancelled right after being handed the slot gives it
    to the next; in the end nothing is inside and the last caller got through."""

    async def scenario() -> tuple[list[int], int]:
        gate = CallGate(1, start=1, slow_s=10.0)
        calls = _Calls(gate)
        calls.start(0, 1, 2, 3)
        await _settle()
        calls.tasks[1].cancel()  # waiting in the queue
        await _settle()
        calls.finish(0)
        await asyncio.sleep(0)  # 0 leaves and hands the slot to 2, whose task has not run yet ...
        assert gate.busy == 1 and calls.order == [0]
        calls.tasks[2].cancel()  # ... and is cancelled before it does: 3 must get the slot
        await _settle()
        calls.finish(3)
        await _settle()
        return calls.order, gate.busy

    order, busy = run_virtual(scenario())
    assert order == [0, 3]
    assert busy == 0
