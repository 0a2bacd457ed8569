"""Pacing end to end over the emulator: its own sliding windows count what reached it (time-scaled: 1 s windows).

The figures in docs/pacing.md come from these runs; ``-s`` prints them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bulkconn.emulator import ROTATING
from tests.conftest import Rehearsal

pytestmark = pytest.mark.e2e  # real emulator over TLS on loopback

Start = Callable[..., Awaitable[Rehearsal]]
ALIASES = ["contoso", "fabrikam", "northwind"]


def _lines(r: Rehearsal, aliases: list[str]) -> list[dict[str, Any]]:
    return r.patch_all(aliases, lambda alias, c: {"serverName": f"paced-{c['id'][:8]}.{alias}.example"})


def _app(stats: dict[str, Any], alias: str) -> dict[str, Any]:
    (app,) = stats["tenants"][alias]["apps"].values()
    return dict(app)


def _say(alias: str, app: dict[str, Any]) -> None:
    counts = app["window_counts"][:-1]
    print(
        f"{alias}: limit {app['limit']}/{app['window_s']:g} s, busiest {app['max_writes_in_window']}, "
        f"median window {statistics.median(counts) if counts else 0}, windows over the limit "
        f"{app['windows_over_limit']}, 429 {app['writes_throttled']}/{app['writes_total']}, "
        f"{app['last_write_s'] - app['first_write_s']:.2f} s for {app['writes_admitted']} writes"
    )


async def test_at_the_limit_each_tenant_fills_its_window_and_never_crosses_it(rehearsal: Start) -> None:
    """Two tenants x 600 writes at 100 per 1 s: the emulator counts 97-100 in the busiest window, none over."""
    r = await rehearsal(tenants=2, connectors_per_tenant=600)
    result = await r.run(r.job(_lines(r, ALIASES[:2])))
    assert result.counts == Counter({"succeeded": 1200})
    stats = r.emu.stats()
    assert stats["throttled_total"] == 0
    for alias in ALIASES[:2]:
        app = _app(stats, alias)
        _say(alias, app)
        assert 97 <= app["max_writes_in_window"] <= 100
        assert app["windows_over_limit"] == 0
        assert statistics.median(app["window_counts"][:-1]) >= 95


async def test_a_tenant_whose_real_limit_is_lower_finds_it_and_the_others_are_unaffected(rehearsal: Start) -> None:
    """Contoso really allows 40 per window while its configuration says 100 (Retry-After in every form, or none):
    it finds its limit with few 429s; fabrikam and northwind run at 100 and never see a 429."""
    r = await rehearsal(
        tenants=3,
        connectors_per_tenant=800,
        tenant_limits={"contoso": {"writes_per_app": 40}},
        retry_after_cycle=ROTATING,
    )
    # 800 writes for contoso (20 of its windows), 400 for the others.
    lines = _lines(r, ["contoso"]) + _lines(r, ALIASES[1:])[::2]
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 1600})
    stats = r.emu.stats()
    for alias in ALIASES:
        _say(alias, _app(stats, alias))
    contoso = _app(stats, "contoso")
    assert contoso["writes_throttled"] <= 0.05 * contoso["writes_total"]  # the start-up burst included
    assert contoso["max_writes_in_window"] == 40
    assert statistics.median(contoso["window_counts"][:-1]) >= 38
    assert contoso["last_write_s"] - contoso["first_write_s"] <= 1.25 * 20  # 800 writes at 40 per 1 s window
    for alias in ("fabrikam", "northwind"):
        app = _app(stats, alias)
        assert app["writes_throttled"] == 0 and app["windows_over_limit"] == 0
        assert 97 <= app["max_writes_in_window"] <= 100
