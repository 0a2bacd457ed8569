"""The real engine against a sliding-window fake Graph in virtual time: pacing figures per scenario.

Each scenario runs :class:`~bulkconn.engine.Engine` with its default pacer over a
:class:`~tests.fakes.FakeTransport` with jittered latency, answered by :class:`~tests.fakes.FakeGraph`, which
counts every write at arrival in exact sliding windows. ``python -m tests.engine_pacing`` prints the figures
that docs/pacing.md quotes; ``tests/test_engine_pacing.py`` asserts them.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from bulkconn.engine import Engine, EngineSettings
from bulkconn.pacing import GLOBAL_WINDOW_S
from tests.engine_harness import POLICY, Run, run_engine, update
from tests.fakes import FakeGraph, jittered
from tests.pacing_sim import FORMS, busiest, ideal_s, median_window, window_counts

HTTP_FORMS = tuple("http-date" if form == "date" else form for form in FORMS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One run: the service's limits (``graph``: FakeGraph arguments) and what the configuration says."""

    tenants: tuple[str, ...] = ("contoso",)
    ops: int | tuple[int, ...] = 2500  # per tenant (a tuple: one figure per tenant)
    graph: dict[str, Any] = field(default_factory=dict)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tenant: writes_per_20s, window_s
    real: tuple[int, float] = (100, 20.0)  # the limit that binds (for the ideal time and the windows)
    change: tuple[float, int, float] | None = None  # at this time, every tenant's limit becomes (limit, window)
    global_limit: tuple[int, float] | None = None  # (per window, window s), on both sides
    latency_s: float = 0.05
    jitter_s: float = 0.04
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Figures:
    """What a run showed, as the service counted it (the first tenant, or the global window when there is one)."""

    wall_ideal: float
    throttled_total: float  # every refused write, start-up included, of all writes
    busiest_attempts: int  # the most writes received in any sliding window, refused ones included
    busiest_admitted: int
    median_window: float
    windows: int
    counts: list[int]  # admitted per consecutive window, from the first write


def run(scenario: Scenario) -> tuple[Run, FakeGraph]:
    """Run ``scenario`` to the end in virtual time."""
    graph_args = dict(scenario.graph)
    settings = EngineSettings(seed=scenario.seed, policy=POLICY)
    if scenario.global_limit is not None:
        graph_args["global_window"] = scenario.global_limit
        per_window, window_s = scenario.global_limit
        settings = EngineSettings(
            seed=scenario.seed, policy=POLICY, global_per_window=per_window, global_window_s=window_s
        )
    graph = FakeGraph(**graph_args)
    lines = [
        update(n + 10_000 * i, tenant=alias)
        for i, (alias, ops) in enumerate(zip(scenario.tenants, per_tenant(scenario), strict=True))
        for n in range(ops)
    ]
    during: Callable[[Engine], None] | None = None
    if scenario.change is not None:
        at_s, limit, window_s = scenario.change

        def change_later(engine: Engine) -> None:
            def change() -> None:
                for alias in scenario.tenants:
                    graph.set_limit(alias, limit, window_s)

            asyncio.get_running_loop().call_later(at_s, change)

        during = change_later
    overrides = {alias: scenario.config.get(alias, {}) for alias in scenario.tenants}
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        result = run_engine(
            Path(tmp),
            patch,
            lines,
            graph,
            settings=settings,
            overrides=overrides,
            during=during,
            latency=jittered(scenario.latency_s, scenario.jitter_s, seed=scenario.seed),
        )
    return result, graph


def per_tenant(scenario: Scenario) -> tuple[int, ...]:
    """Operations per tenant."""
    if isinstance(scenario.ops, int):
        return (scenario.ops,) * len(scenario.tenants)
    return scenario.ops


def figures(scenario: Scenario, result: Run, graph: FakeGraph) -> Figures:
    """The figures of one run (for the first tenant, or over all tenants against the global window)."""
    per_window, window_s = scenario.real
    writes = sum(per_tenant(scenario))
    if scenario.global_limit is not None:
        per_window, window_s = scenario.global_limit
        attempts = sorted(t for times in graph.attempts.values() for t in times)
        admitted = sorted(t for times in graph.accepted.values() for t in times)
    else:
        attempts, admitted = graph.attempts[scenario.tenants[0]], graph.accepted[scenario.tenants[0]]
    return Figures(
        wall_ideal=result.elapsed_s / ideal_s(writes, per_window, window_s),
        throttled_total=graph.throttled_total / writes,
        busiest_attempts=busiest(attempts, window_s),
        busiest_admitted=busiest(admitted, window_s),
        median_window=median_window(admitted, window_s),
        windows=len(window_counts(admitted, window_s)),
        counts=window_counts(admitted, window_s, skip=0),
    )


def measure(scenario: Scenario) -> Figures:
    return figures(scenario, *run(scenario))


def shorter_window(forms: tuple[str, ...] = HTTP_FORMS, **changes: Any) -> Scenario:
    """The service allows 40 writes per 2 s while 1,000 per 20 s is configured: 2.5x lower, 10x shorter window."""
    return Scenario(
        ops=1000,
        graph={"writes_per_window": 40, "window_s": 2.0, "retry_after": forms},
        config={"contoso": {"writes_per_20s": 1000}},
        real=(40, 2.0),
        **changes,
    )


SCENARIOS: tuple[tuple[str, Scenario], ...] = (
    ("a  configured right, 100/20 s", Scenario(jitter_s=0.1)),
    (
        "b1 40/20 s, 100/20 s configured",
        Scenario(ops=1000, graph={"writes_per_window": 40, "retry_after": HTTP_FORMS}, real=(40, 20.0)),
    ),
    ("b2 40/2 s, 1000/20 s configured", shorter_window()),
    ("b2 same, Retry-After whole seconds", shorter_window(("seconds",))),
    ("b2 same, Retry-After fractional", shorter_window(("fractional",))),
    ("b2 same, Retry-After HTTP date", shorter_window(("http-date",))),
    ("b2 same, Retry-After always absent", shorter_window(("absent",))),
    (
        "b3 80/40 s, 100/20 s configured",
        Scenario(
            ops=2000, graph={"writes_per_window": 80, "window_s": 40.0, "retry_after": HTTP_FORMS}, real=(80, 40.0)
        ),
    ),
    (
        "c  40 -> 100/20 s at 200 s (ideal: 100)",
        Scenario(ops=3000, graph={"writes_per_window": 40, "retry_after": HTTP_FORMS}, change=(200.0, 100, 20.0)),
    ),
    (
        "d  3 tenants, global 100/10 s, other apps",
        Scenario(
            tenants=("contoso", "fabrikam", "northwind"),
            ops=(500, 800, 800),
            graph={"tenant_window": (200, 20.0), "other_apps_per_s": {"contoso": 130 / 20}, "retry_after": HTTP_FORMS},
            global_limit=(100, GLOBAL_WINDOW_S),
        ),
    ),
)


def main(seeds: int = 0) -> None:
    """Print every scenario's figures for seed 7, or with ``seeds`` the worst over seeds 0 .. seeds-1."""
    if seeds:
        print(f"{'scenario':42} {'worst wall/ideal':>16} {'worst 429 %':>11}   over seeds 0..{seeds - 1}")
        for name, scenario in SCENARIOS:
            runs = [measure(replace(scenario, seed=seed)) for seed in range(seeds)]
            worst_wall, worst_share = max(f.wall_ideal for f in runs), max(f.throttled_total for f in runs)
            print(f"{name:42} {worst_wall:16.3f} {100 * worst_share:11.2f}")
        return
    print(
        f"{'scenario':42} {'wall/ideal':>10} {'429 %':>6} {'busiest*':>8} {'admitted':>8} {'median':>6} {'windows':>7}"
    )
    for name, scenario in SCENARIOS:
        f = measure(scenario)
        print(
            f"{name:42} {f.wall_ideal:10.3f} {100 * f.throttled_total:6.2f} "
            f"{f.busiest_attempts:8d} {f.busiest_admitted:8d} {f.median_window:6.0f} {f.windows:7d}"
        )
    print("* the most writes received in any sliding window as the service counts them, refused ones included")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
