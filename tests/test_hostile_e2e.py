"""Hostile answers end to end: the emulator's fault modes over real TLS, through a whole run and its report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bulkconn.emulator import Faults
from bulkconn.emulator.tls import ensure_tls
from bulkconn.engine import EngineSettings
from bulkconn.transport import MAX_BODY_BYTES
from tests.conftest import FAST_RETRY, Rehearsal, World, read_report

pytestmark = pytest.mark.e2e

Start = Callable[..., Awaitable[Rehearsal]]

HOSTILE = Faults(
    p_html_502=0.06,
    p_not_json=0.06,
    p_truncated=0.06,
    p_huge=0.02,
    huge_body_bytes=MAX_BODY_BYTES + 1,
    p_batch_missing_id=0.04,
    p_batch_extra_id=0.04,
    p_batch_duplicate_id=0.04,
    p_batch_unknown_id=0.04,
    p_batch_no_status=0.04,
)


def _lines(r: Rehearsal, aliases: list[str]) -> list[dict[str, Any]]:
    """A PATCH of every connector, and a sync of every fourth one."""
    lines: list[dict[str, Any]] = []
    for alias in aliases:
        for n, c in enumerate(r.connectors(alias)):
            lines.append({"tenant": alias, "id": c["id"], "patch": {"serverName": f"h{n}.{alias}.example"}})
            if n % 4 == 0:
                lines.append({"tenant": alias, "id": c["id"], "action": "sync", "syncType": "deltaSync"})
    return lines


async def test_hostile_answers_every_patch_lands_and_no_sync_is_sent_twice(rehearsal: Start) -> None:
    """HTML 502s, non-JSON, cut-off and huge answers, broken $batch ids: patches land, syncs at most once."""
    r = await rehearsal(tenants=2, connectors_per_tenant=80, faults=HOSTILE, seed=5)
    lines = _lines(r, ["contoso", "fabrikam"])
    await r.run(r.job(lines), settings=EngineSettings(seed=1, policy=FAST_RETRY, batch_size=4))
    _, results, _ = read_report(r.dir / "report.jsonl")
    assert Counter(x["key"] for x in results) == Counter(str(n) for n in range(1, len(lines) + 1))
    stats = r.emu.stats()
    assert sum(stats["faults"].values()) >= 10  # which kinds fire depends on timing; each has its own test
    state = r.emu.state()["tenants"]
    status = {x["key"]: x for x in results}
    for number, line in enumerate(lines, start=1):
        outcome = status[str(number)]
        syncs = stats["tenants"][line["tenant"]]["syncs"].get(line["id"], 0)
        if "patch" in line:
            assert outcome["status"] == "succeeded", outcome
            assert state[line["tenant"]]["exchangeConnectors"][line["id"]]["serverName"] == line["patch"]["serverName"]
        elif outcome["status"] == "succeeded":
            assert syncs == 1
        else:
            assert outcome["status"] == "uncertain" and syncs <= 1, outcome
            assert outcome["error"]["code"] and outcome["error"]["message"]
    assert all(n <= 1 for t in stats["tenants"].values() for n in t["syncs"].values())


async def test_a_redirecting_proxy_fails_its_tenant_clearly_and_the_token_stays(rehearsal: Start) -> None:
    """Every answer for contoso is a 307 to another host: its operations fail saying so; fabrikam is unaffected."""
    r = await rehearsal(tenants=2, connectors_per_tenant=10, tenant_faults={"contoso": Faults(p_redirect_offhost=1.0)})
    lines = _lines(r, ["contoso", "fabrikam"])
    result = await r.run(r.job(lines))
    _, results, _ = read_report(r.dir / "report.jsonl")
    contoso = [x for x in results if x["tenant"] == "contoso"]
    assert {x["status"] for x in contoso} == {"failed"} and all(x["attempts"] == 1 for x in contoso)
    assert all("redirect to evil.invalid, not followed" in x["error"]["message"] for x in contoso)
    assert result.per_tenant["fabrikam"]["succeeded"] == len(lines) - len(contoso)
    assert r.emu.stats()["tenants"]["contoso"]["patches"] == {}


def test_a_wrong_ca_is_a_clear_tls_error_and_nothing_is_sent(world: World, tmp_path: Path) -> None:
    """ca_bundle names another CA: identity cannot be reached, "not trusted" (exit 5), no traceback, nothing sent."""
    other = ensure_tls(tmp_path / "other-ca").ca_file
    text = world.config.read_text()
    world.config.write_text(text.replace(str(world.emu.ca_file.resolve()), str(other)))
    proc = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q")
    assert proc.returncode == 5, proc.stderr
    said = " ".join(proc.stderr.split())  # the summary table wraps long lines
    assert "cannot reach the identity service" in said and "is not trusted; check the tenant's ca_bundle" in said
    assert "Traceback" not in proc.stderr
    assert world.emu.stats()["requests_total"] == 0
