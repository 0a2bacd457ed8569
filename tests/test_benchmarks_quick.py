"""The benchmark harness keeps working: a tiny run yields well-formed results (figures are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OVERHEAD = {"floor-single", "bulkconn-single", "floor-batch", "bulkconn-batch"}
# Subprocesses and a separate emulator: the end-to-end timeout, and 200 s for the module fixture's harness run.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(200)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("bench")
    output = tmp / "results.json"
    argv = [sys.executable, "-m", "benchmarks", "run", "--quick", "--only", "startup", "--only", "overhead"]
    argv += ["--output", str(output), "--work", str(tmp / "work"), "--no-readme"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(output.read_text())
    return result


def test_every_contender_did_the_same_work(results: dict[str, object]) -> None:
    """Each overhead contender ran, and the emulator saw every operation of the job from each of them."""
    overhead = results["scenarios"]["overhead"]  # type: ignore[index]
    assert set(overhead["contenders"]) == OVERHEAD
    for entry in overhead["contenders"].values():
        assert entry["median"]["operations_seen"] == overhead["setup"]["operations"]
        assert entry["median"]["cpu_s"] > 0 and entry["median"]["peak_rss_mib"] > 0


def test_ratios_pair_bulkconn_with_the_floor(results: dict[str, object]) -> None:
    """Paired ratios exist for both modes and for start-up, with every metric a positive number."""
    pairs = {(r["a"], r["b"]): r for s in results["scenarios"].values() for r in s["ratios"]}  # type: ignore[attr-defined]
    assert set(pairs) == {
        ("bulkconn-single", "floor-single"),
        ("bulkconn-batch", "floor-batch"),
        ("bulkconn-version", "imports"),
    }
    for ratio in pairs.values():
        assert all(ratio[m] > 0 for m in ("cpu_s", "wall_s", "peak_rss_mib"))


def test_tables_render_every_contender(results: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """The README tables are generated from the results: one row per contender and per ratio."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.tables import render

    text = render(results)
    for name in OVERHEAD:
        assert f"| {name} |" in text
    assert "| bulkconn-batch / floor-batch |" in text
