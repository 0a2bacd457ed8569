"""The bounded chaos soak: many tenants, chaos and hostile faults, token revocations, time-scaled throttling, and
repeated kill -9 + ``--resume`` of real ``bulkconn run`` processes. At the end: the emulator holds exactly what
the job asked for, the report has one final result per operation, no window went over the limit, and no sync was
sent twice.

The short version runs with the normal test run (``.ci/run``); the longer one is the same test with more of
everything, e.g. ``BULKCONN_SOAK_SCALE=10 pytest -m soak -p no:cacheprovider`` (docs/guarantees.md).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator import CHAOS, EmulatorOptions, EmulatorThread
from tests.conftest import World, read_report

SCALE = max(1, int(os.environ.get("BULKCONN_SOAK_SCALE", "1")))
TENANTS = 8 * min(SCALE, 4)
CONNECTORS = 150 * SCALE  # per tenant
KILLS = 3 * SCALE  # kill -9 + resume cycles before the final resume
TIME_SCALE = 0.05  # Intune's 20 s windows last 1 s
WINDOW_S = 20 * TIME_SCALE
SYNC_EVERY = 8  # one connector in 8 also gets a sync

pytestmark = [pytest.mark.soak, pytest.mark.e2e, pytest.mark.timeout(300 * SCALE)]

# --chaos, plus hostile answers at low rates. Redirects are left out: they fail an operation for good (by design),
# and the soak's end state is "everything the job asked for".
FAULTS = replace(
    CHAOS,
    p_html_502=0.02,
    p_not_json=0.02,
    p_truncated=0.02,
    p_stall=0.01,
    p_silent=0.01,
    stall_s=0.5,
    p_batch_missing_id=0.01,
    p_batch_extra_id=0.01,
    p_batch_duplicate_id=0.01,
    p_batch_unknown_id=0.01,
    p_batch_no_status=0.01,
)


def _job(world: World) -> list[dict[str, Any]]:
    """Every connector patched to a value of its own, a sync for one in ``SYNC_EVERY``; tenants interleaved."""
    state = world.emu.state()["tenants"]
    per_tenant = [
        [(alias, object_id) for object_id in sorted(objects["exchangeConnectors"])] for alias, objects in state.items()
    ]
    lines: list[dict[str, Any]] = []
    for row in zip(*per_tenant, strict=True):
        for alias, object_id in row:
            lines.append({"tenant": alias, "id": object_id, "patch": {"serverName": f"soak-{object_id[:8]}.{alias}"}})
            if int(object_id[:4], 16) % SYNC_EVERY == 0:
                lines.append({"tenant": alias, "id": object_id, "action": "sync", "syncType": "deltaSync"})
    random.Random(1).shuffle(lines)  # a PATCH and a sync of one object in either order
    return lines


@pytest.fixture
def soak_world(tmp_path: Path) -> Iterator[tuple[World, list[dict[str, Any]]]]:
    options = EmulatorOptions(
        tenants=TENANTS,
        connectors_per_tenant=CONNECTORS,
        time_scale=TIME_SCALE,
        seed=12,
        faults=FAULTS,
        token_max_age_s=5.0,  # tokens are refused early, several times per tenant over the soak
    )
    with EmulatorThread(options) as emu:
        world = World(emu, tmp_path)
        lines = _job(world)
        world.job.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        yield world, lines


def _results(report: Path) -> int:
    return report.read_bytes().count(b'"type":"result"') if report.exists() else 0


def _kill_after(world: World, report: Path, count: int, *, resume: bool) -> None:
    """Start a run and kill -9 it once the report holds ``count`` results (or when it ends by itself)."""
    proc = world.start("run", "job.jsonl", "--config", "bulkconn.toml", "-q", *(["--resume"] if resume else []))
    try:
        deadline = time.monotonic() + 120 * SCALE
        while _results(report) < count and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)


def test_chaos_soak_kill_9_and_resume_end_in_the_requested_state(
    soak_world: tuple[World, list[dict[str, Any]]],
) -> None:
    """Chaos + hostile faults + revocations + kill -9/--resume cycles: exact end state, one result each, no excess."""
    world, lines = soak_world
    report = world.dir / "job.report.jsonl"
    for cycle in range(1, KILLS + 1):
        _kill_after(world, report, len(lines) * cycle // (KILLS + 1), resume=cycle > 1)
        world.emu.revoke_tokens()  # every token issued so far is refused from now on
        time.sleep(WINDOW_S)  # a restart within one window of a kill could exceed it: the killed run's writes count
    final = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume", timeout=240 * SCALE)
    assert final.returncode in (0, 1), final.stderr  # 1 only for syncs left uncertain by a fault or a kill

    _, results, _ = read_report(report)
    per_key = Counter(r["key"] for r in results)
    assert per_key == Counter(str(n) for n in range(1, len(lines) + 1))  # exactly one final result per operation
    status = {r["key"]: r for r in results}
    stats = world.emu.stats()
    state = world.emu.state()["tenants"]
    for number, line in enumerate(lines, start=1):
        outcome = status[str(number)]
        if "patch" in line:
            assert outcome["status"] == "succeeded", outcome
            assert state[line["tenant"]]["exchangeConnectors"][line["id"]]["serverName"] == line["patch"]["serverName"]
        else:
            sent = stats["tenants"][line["tenant"]]["syncs"].get(line["id"], 0)
            assert sent == 1 if outcome["status"] == "succeeded" else sent <= 1, outcome
            assert outcome["status"] in ("succeeded", "uncertain"), outcome
    assert all(n <= 1 for t in stats["tenants"].values() for n in t["syncs"].values())  # no sync sent twice
    for alias, entry in stats["tenants"].items():
        assert entry["windows_over_limit"] == 0, alias
        assert all(app["windows_over_limit"] == 0 for app in entry["apps"].values()), alias
    assert stats["faults_total"] > 0 and stats["cross_tenant_attempts"] == 0
    headers = report.read_bytes().count(b'"type":"header"')
    assert headers == KILLS + 1  # every cycle started (and so was killed mid-run), then the final resume
