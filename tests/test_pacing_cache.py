"""A tenant's limits remember their last answer until their state changes: never a different verdict."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from bulkconn.limits import TenantLimits
from tests.pacing_sim import Scenario, Simulation, shorter_window

SCENARIOS = {
    "configured right": Scenario(ops_per_tenant=600),
    "lower limit": Scenario(server_app=(40, 20.0), ops_per_tenant=400),
    "no Retry-After": Scenario(server_app=(40, 20.0), ops_per_tenant=400, forms=("absent",)),
    "shorter window": replace(shorter_window(("absent",)), ops_per_tenant=400),
    "rising limit": Scenario(server_app=(60, 20.0), change_at_s=60.0, changed_to=(100, 20.0), ops_per_tenant=800),
    "shared global": Scenario(tenants=3, ops_per_tenant=300, client_global=(150, 10.0), server_global=(150, 10.0)),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_remembered_answer_gives_the_verdict_a_fresh_one_would(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every question of a simulated run, asked afresh of a copy: ready or not alike, never a later time."""
    remembered = TenantLimits._own_earliest
    hits = 0

    def checked(self: TenantLimits, now: float, *, writes: int, reads: int) -> float:
        nonlocal hits
        fresh = copy.deepcopy(self)
        expected = fresh._own_limits_at(now, writes=writes, reads=reads)
        before = self._cached
        answer = remembered(self, now, writes=writes, reads=reads)
        hits += self._cached is before
        assert (answer <= now) == (expected <= now), (now, writes, answer, expected)
        assert answer <= expected  # earlier only wakes a waiter, who asks again
        return answer

    monkeypatch.setattr(TenantLimits, "_own_earliest", checked)
    Simulation(scenario).run()
    assert hits > 0


def test_a_send_or_an_answer_is_never_hidden_by_a_remembered_answer() -> None:
    """A full window answers 'later' until the send leaves it; a 429 heard meanwhile moves the answer at once."""
    limits = TenantLimits(writes_per_window=10, window_s=20.0, margin_s=0.0)
    limits.record_send(0.0, writes=10)
    limits.answered()
    limits.succeeded(0.5, sent_at=0.0)
    assert limits.earliest_send_at(1.0, writes=1) == pytest.approx(20.0)
    assert limits.earliest_send_at(5.0, writes=1) == pytest.approx(20.0)  # remembered
    limits.throttled(6.0, sent_at=0.0, refused=0, retry_after_s=30.0)  # a pause longer than the window
    assert limits.earliest_send_at(6.0, writes=1) == pytest.approx(36.0)
    assert limits.earliest_send_at(36.0, writes=1) == pytest.approx(36.0)
    limits.record_send(36.0, writes=10)
    assert limits.earliest_send_at(36.0, writes=1) == pytest.approx(56.0)
