"""A tenant's limits answer "now" without the full computation only when the full computation says "now" too."""

from __future__ import annotations

import copy

import pytest

from bulkconn.limits import TenantLimits
from bulkconn.sendlog import SharedLimit
from tests.pacing_sim import Scenario, Simulation
from tests.test_pacing_cache import SCENARIOS


def _full(limits: TenantLimits, now: float, writes: int, reads: int) -> float:
    """The answer without the fast path, from a copy (the computation may change state: a start-up ending)."""
    fresh = copy.deepcopy(limits)
    at = fresh._own_limits_at(now, writes=writes, reads=reads)
    if fresh.shared is not None:
        at = max(at, fresh.shared.room_at(now, writes + reads))
    return at


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_fast_answer_is_the_full_one(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every question of a simulated run the fast path answers: the full computation answers ``now`` as well."""
    clear = TenantLimits._clear
    taken = 0

    def checked(self: TenantLimits, now: float, writes: int, requests: int) -> bool:
        nonlocal taken
        fast = clear(self, now, writes, requests)
        if fast:
            taken += 1
            assert _full(self, now, writes, requests - writes) == now, (now, writes)
        return fast

    monkeypatch.setattr(TenantLimits, "_clear", checked)
    Simulation(scenario).run()
    assert taken > 0


def test_a_full_log_or_a_pause_takes_the_full_computation() -> None:
    """The fast path steps aside at the limit of any log, during a cool-down and while a limit is learned."""
    shared = SharedLimit(per_window=15, window_s=10.0, margin_s=0.0)
    limits = TenantLimits(writes_per_window=10, any_per_window=12, window_s=20.0, margin_s=0.0, shared=shared)
    assert limits._clear(0.0, 10, 10)
    limits.record_send(0.0, writes=9)
    limits.answered()
    assert limits._clear(1.0, 1, 1) and not limits._clear(1.0, 2, 2)  # the write limit
    assert limits.earliest_send_at(1.0, writes=2) == pytest.approx(20.0)
    assert not limits._clear(1.0, 0, 4)  # any request: 9 + 4 > 12
    shared.log.add(1.0, 6)  # another tenant of the app
    assert not limits._clear(1.0, 1, 1)  # the global limit: 9 + 6 + 1 > 15
    assert limits.earliest_send_at(1.0, writes=1) == pytest.approx(10.0)
    quiet = TenantLimits(writes_per_window=10, window_s=20.0, margin_s=0.0)
    quiet.throttled(2.0, sent_at=1.0, refused=0, retry_after_s=5.0)
    assert not quiet._clear(3.0, 1, 1) and quiet.earliest_send_at(3.0, writes=1) == pytest.approx(7.0)
    assert quiet._clear(7.0, 1, 1)
    learning = TenantLimits(writes_per_window=10, window_s=20.0, margin_s=0.0)
    learning.record_send(0.0, writes=5)
    learning.answered()
    learning.throttled(1.0, sent_at=0.0, refused=1, retry_after_s=2.0)
    assert learning.learner.learned is not None and not learning._clear(60.0, 1, 1)
