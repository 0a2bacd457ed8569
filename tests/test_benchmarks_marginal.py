"""The marginal scenario's arithmetic: slope and intercept per contender, slope ratios paired by round."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _harness_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _sample(cpu_s: float) -> object:
    from benchmarks.measure import Sample

    return Sample(cpu_s=cpu_s, wall_s=cpu_s, peak_rss_mib=50.0, stats={})


def test_slope_is_the_cost_of_one_more_operation_and_the_intercept_what_comes_before() -> None:
    """A costs 0.2 s + 30 us/op, B 0.1 s + 20 us/op (one round off by a constant): 30, 20, 1.5x, 0.2 s fixed."""
    from benchmarks.alternation import marginal_result

    a_small = [0.2 + 1000 * 30e-6, 0.25 + 1000 * 30e-6, 0.2 + 1000 * 30e-6]
    a_big = [0.2 + 10_000 * 30e-6, 0.25 + 10_000 * 30e-6, 0.2 + 10_000 * 30e-6]
    b_small = [0.1 + 1000 * 20e-6] * 3
    b_big = [0.1 + 10_000 * 20e-6] * 3
    runs = {
        1000: {"a": [_sample(x) for x in a_small], "b": [_sample(x) for x in b_small]},
        10_000: {"a": [_sample(x) for x in a_big], "b": [_sample(x) for x in b_big]},
    }
    result = marginal_result(runs, 1000, 10_000, [("a", "b")])  # type: ignore[arg-type]
    a = result["contenders"]["a"]["median"]
    assert a["us_per_op"] == pytest.approx(30.0)
    assert a["fixed_cpu_s"] == pytest.approx(0.2)
    assert result["contenders"]["b"]["median"]["us_per_op"] == pytest.approx(20.0)
    assert result["ratios"] == [{"a": "a", "b": "b", "us_per_op": pytest.approx(1.5)}]


def test_the_table_shows_both_sizes_the_slope_and_the_ratio() -> None:
    from benchmarks.alternation import marginal_result
    from benchmarks.tables import _marginal

    runs = {
        2000: {"bulkconn-batch": [_sample(0.44)], "floor-batch": [_sample(0.25)]},
        20_000: {"bulkconn-batch": [_sample(0.89)], "floor-batch": [_sample(0.61)]},
    }
    rows = _marginal(marginal_result(runs, 2000, 20_000, [("bulkconn-batch", "floor-batch")]))  # type: ignore[arg-type]
    assert "| bulkconn-batch | 0.44 | 0.89 | 25.0 | 0.39 |" in rows
    assert "| bulkconn-batch / floor-batch | 1.25x |" in rows
