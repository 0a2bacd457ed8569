"""Pacing at the limit and learning the real limit, as properties of simulated runs (virtual time, no sleeping).

Each run lasts at least 20 windows; the 429 share counts every refused write, the start-up burst included.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.pacing_sim import (
    FORMS,
    GLOBAL,
    Scenario,
    Simulation,
    busiest,
    ideal_s,
    median_window,
    shorter_window,
    window_counts,
)

SEEDS = (3, 7, 19)


@pytest.mark.parametrize("seed", SEEDS)
def test_limit_configured_right_fills_every_window_and_never_crosses(seed: int) -> None:
    """Configured right: 97-100 of 100 in the busiest window, median >= 95, never over, no 429, <= 1.05x ideal."""
    result = Simulation(Scenario(ops_per_tenant=2500, jitter_s=0.1, seed=seed)).run()
    assert busiest(result.attempts[0], 20.0) <= 100  # as the service counts every write that reached it
    assert 97 <= busiest(result.admitted[0], 20.0) <= 100
    assert median_window(result.admitted[0], 20.0) >= 95
    assert len(window_counts(result.admitted[0], 20.0)) >= 20
    assert result.throttled <= 0.005 * result.writes
    assert result.wall_s <= 1.05 * ideal_s(2500, 100, 20.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("forms", [FORMS, *((form,) for form in FORMS)], ids=lambda f: "+".join(f))
def test_limit_lower_than_configured_is_learned_whatever_retry_after(forms: tuple[str, ...], seed: int) -> None:
    """Real limit 2.5x lower (40 per 20 s): <= 1.25x ideal and <= 5 % of writes refused, for every Retry-After form."""
    result = Simulation(Scenario(server_app=(40, 20.0), ops_per_tenant=1000, forms=forms, seed=seed)).run()
    assert len(window_counts(result.admitted[0], 20.0)) >= 20
    assert result.wall_s <= 1.25 * ideal_s(1000, 40, 20.0)
    assert result.throttled <= 0.05 * result.writes  # every refusal, start-up included
    assert median_window(result.admitted[0], 20.0) >= 38


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("forms", [FORMS, *((form,) for form in FORMS)], ids=lambda f: "+".join(f))
def test_shorter_window_than_configured_is_learned(forms: tuple[str, ...], seed: int) -> None:
    """40 per 2 s while 1,000 per 20 s is configured (2.5x lower, 10x shorter window), whatever Retry-After says
    or when it is always absent (single writes at doubling spans find the window): <= 1.25x ideal, <= 5 % refused."""
    result = Simulation(replace(shorter_window(forms), seed=seed)).run()
    assert len(window_counts(result.admitted[0], 2.0)) >= 20
    assert result.wall_s <= 1.25 * ideal_s(1000, 40, 2.0)
    assert result.throttled <= 0.05 * result.writes  # every refusal, start-up included
    assert max(window_counts(result.admitted[0], 2.0)[-10:]) >= 38  # at the end it runs at the real limit


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("forms", [FORMS, ("absent",)], ids=lambda f: "+".join(f))
def test_longer_window_than_configured_is_learned(forms: tuple[str, ...], seed: int) -> None:
    """80 per 40 s while 100 per 20 s is configured: <= 1.25x ideal and <= 5 % refused."""
    result = Simulation(Scenario(server_app=(80, 40.0), ops_per_tenant=2000, forms=forms, seed=seed)).run()
    assert result.wall_s <= 1.25 * ideal_s(2000, 80, 40.0)
    assert result.throttled <= 0.05 * result.writes  # every refusal, start-up included


def test_rate_follows_a_limit_that_rises_mid_run() -> None:
    """The limit rises from 40 to 100 per 20 s at 200 s: within 8 windows the windows hold >= 97 again."""
    scenario = Scenario(server_app=(40, 20.0), change_at_s=200.0, changed_to=(100, 20.0), ops_per_tenant=3000)
    result = Simulation(scenario).run()
    counts = window_counts(result.admitted[0], 20.0, skip=0)
    assert min(counts[:9]) >= 38  # before: at the lower limit
    assert min(counts[10 + 8 : -1]) >= 97  # eight windows after the change: at the new one
    assert result.throttled <= 0.05 * result.writes  # every refusal, start-up included


@pytest.mark.parametrize("seed", SEEDS)
def test_per_tenant_limit_shared_with_invisible_apps(seed: int) -> None:
    """Other apps keep 130 of the tenant's 200 writes per 20 s: we learn our 70 with <= 5 % refused, <= 1.25x ideal."""
    scenario = Scenario(server_tenant=(200, 20.0), other_apps_per_s=130 / 20, ops_per_tenant=1700, seed=seed)
    result = Simulation(scenario).run()
    assert result.throttled <= 0.05 * result.writes  # every refusal, start-up included
    assert result.wall_s <= 1.25 * ideal_s(1700, 70, 20.0)
    assert median_window(result.admitted[0], 20.0) >= 66


@pytest.mark.parametrize("seed", SEEDS)
def test_global_limit_shared_by_many_tenants_is_never_crossed(seed: int) -> None:
    """Graph's global per-app limit (scaled 130x down: 1,000 per 10 s) across 30 tenants: filled, never crossed."""
    result = Simulation(replace(GLOBAL, seed=seed)).run()
    assert result.throttled == 0
    assert 970 <= busiest(result.global_admitted, 10.0) <= 1000
    assert median_window(result.global_admitted, 10.0) >= 950
    assert max(busiest(times, 20.0) for times in result.admitted) <= 100
    # The last tenants to finish run under their own 100 per 20 s, so the tail is slower than the global rate.
    assert result.wall_s <= 1.08 * ideal_s(30 * 700, 1000, 10.0)
