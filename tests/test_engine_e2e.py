"""The engine end to end over real sockets against the emulator (time-scaled: 20 s windows last 1 s).

What only a real service shows stays here (TLS, connection reuse, the emulator's faults and error shapes, a full
multi-tenant run); answer sequences, pacing and fairness are tested in ``test_engine.py`` in virtual time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bulkconn.emulator import CHAOS, Faults
from bulkconn.engine import EngineSettings
from bulkconn.retry import RetryPolicy
from tests.conftest import FAST_RETRY, Rehearsal, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

Start = Callable[..., Awaitable[Rehearsal]]


def _change(alias: str, c: dict[str, Any]) -> dict[str, Any]:
    return {
        "serverName": f"new-{c['id'][:8]}.{alias}.example",
        "exchangeConnectorType": "hosted",
        "status": "connected",
    }


def _assert_applied(r: Rehearsal, lines: list[dict[str, Any]]) -> None:
    state = r.emu.state()["tenants"]
    for line in lines:
        entity = state[line["tenant"]]["exchangeConnectors"][line["id"]]
        for key, value in line["patch"].items():
            assert entity[key] == value, (line, entity)


async def test_multi_tenant_job_applies_every_change_once(rehearsal: Start) -> None:
    """3 tenants x 150 objects: every object ends as requested, one result per op, pacing at the limit."""
    r = await rehearsal(tenants=3, connectors_per_tenant=150)
    lines = r.patch_all(["contoso", "fabrikam", "northwind"], _change)
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 450})
    header, results, summary = read_report(r.dir / "report.jsonl")
    assert len(header["job_sha256"]) == 64
    assert sorted(int(x["key"]) for x in results) == list(range(1, 451))
    assert all(x["status"] == "succeeded" and x["http_status"] == 200 and x["request_id"] for x in results)
    # One client-request-id per $batch envelope (the pacer sizes each to what fits in the window at the time).
    assert len({x["client_request_id"] for x in results}) == r.emu.stats()["batches_total"] <= 3 * 15
    assert summary["counts"] == {"succeeded": 450}
    _assert_applied(r, lines)
    stats = r.emu.stats()
    assert stats["throttled_total"] == 0
    assert stats["client_request_ids_missing"] == 0
    assert all(ua.startswith("bulkconn/") for ua in stats["user_agents"])
    for alias in ("contoso", "fabrikam", "northwind"):
        entry = stats["tenants"][alias]
        (app,) = entry["apps"].values()
        assert app["max_write_attempts_in_window"] <= 100 and app["windows_over_limit"] == 0  # never over the limit
        assert entry["max_writes_in_window"] >= 97  # ... and filled the window (was >= 60 with the leaky bucket)
        assert entry["token_requests"] == 1


@pytest.mark.parametrize("patch_status", [200, 204])
@pytest.mark.parametrize("batch_size", [1, 20])
async def test_200_and_204_both_mean_success(rehearsal: Start, patch_status: int, batch_size: int) -> None:
    """A PATCH answered 200 with a body or 204 with none is a success, batched or single."""
    r = await rehearsal(tenants=1, connectors_per_tenant=30, patch_status=patch_status)
    lines = r.patch_all(["contoso"], _change)
    result = await r.run(r.job(lines), settings=EngineSettings(batch_size=batch_size, seed=1, policy=FAST_RETRY))
    assert result.counts["succeeded"] == 30
    _, results, _ = read_report(r.dir / "report.jsonl")
    assert {x["http_status"] for x in results} == {patch_status}
    assert r.emu.stats()["batches_total"] == (0 if batch_size == 1 else 2)
    _assert_applied(r, lines)


async def test_chaos_every_operation_still_succeeds(rehearsal: Start) -> None:
    """--chaos (500/503/504, drops, envelope 429, garbled batches, latency): all PATCHes end succeeded."""
    r = await rehearsal(tenants=2, connectors_per_tenant=150, faults=CHAOS, seed=11)
    lines = r.patch_all(["contoso", "fabrikam"], _change)
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 300})
    assert r.emu.stats()["faults_total"] > 0
    _, results, _ = read_report(r.dir / "report.jsonl")
    assert len(results) == 300 and max(x["attempts"] for x in results) > 1
    _assert_applied(r, lines)


async def test_malformed_batch_answers_are_per_operation_errors(rehearsal: Start) -> None:
    """A $batch answer that drops, repeats or garbles sub-responses never crashes or hangs the run."""
    r = await rehearsal(tenants=1, connectors_per_tenant=60, faults=Faults(p_batch_garbled=1.0))
    lines = r.patch_all(["contoso"], _change)
    policy = RetryPolicy(max_attempts=1)  # so the first malformed answer is the final word
    result = await r.run(r.job(lines), settings=EngineSettings(seed=1, policy=policy))
    _, results, _ = read_report(r.dir / "report.jsonl")
    assert len(results) == 60
    assert result.counts["succeeded"] + result.counts["failed"] == 60
    codes = {x["error"]["code"] for x in results if x["error"]}
    assert codes and codes <= {"BatchResponseMissing", "BatchResponseDuplicate", "BatchResponseInvalid"}
    assert all(
        "sub-response" in x["error"]["message"] or "JSON" in x["error"]["message"] for x in results if x["error"]
    )


async def test_invalid_lines_are_reported_and_valid_ones_proceed(rehearsal: Start) -> None:
    """Bad lines become 'invalid' results naming their line and property; the rest are applied."""
    r = await rehearsal(tenants=1, connectors_per_tenant=3)
    a, b, c = (x["id"] for x in r.connectors("contoso"))
    path = r.dir / "job.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"defaults": {"tenant": "contoso"}}',
                f'{{"id": "{a}", "patch": {{"serverName": "ok-a"}}}}',
                f'{{"id": "{b}", "patch": {{"status": "online"}}}}',
                "{not json",
                "",
                f'{{"id": "{c}", "patch": {{"lastSyncDateTime": "tomorrow"}}}}',
                f'{{"id": "{c}", "patch": {{"serverName": "ok-c"}}, "colour": "red"}}',
                f'{{"tenant": "nowhere", "id": "{c}", "patch": {{"serverName": "x"}}}}',
                f'{{"id": "{c}", "patch": {{"id": "other"}}}}',
                f'{{"id": "{c}", "patch": {{}}}}',
                '{"patch": {"serverName": "x"}}',
                f'{{"id": "{c}", "patch": {{"exchangeConnectorType": "hosted"}}}}',
            ]
        )
        + "\n"
    )
    result = await r.run(path)
    assert result.counts == Counter({"succeeded": 2, "invalid": 8})
    _, results, _ = read_report(r.dir / "report.jsonl")
    invalid = {x["line"]: x["error"]["message"] for x in results if x["status"] == "invalid"}
    assert set(invalid) == {3, 4, 6, 7, 8, 9, 10, 11}
    assert "line 3" in invalid[3] and "'status'" in invalid[3]
    assert "malformed JSON" in invalid[4]
    assert "lastSyncDateTime" in invalid[6]
    assert "unknown field 'colour'" in invalid[7]
    assert "unknown tenant alias 'nowhere'" in invalid[8]
    assert "'id'" in invalid[9]
    assert "empty patch" in invalid[10]
    assert "missing 'id'" in invalid[11]
    state = r.emu.state()["tenants"]["contoso"]["exchangeConnectors"]
    assert state[a]["serverName"] == "ok-a" and state[c]["exchangeConnectorType"] == "hosted"


async def test_same_object_twice_keeps_job_order(rehearsal: Start) -> None:
    """Two changes to one object are never in flight together, and the later line wins."""
    r = await rehearsal(tenants=1, connectors_per_tenant=2)
    a = r.connectors("contoso")[0]["id"]
    lines = [{"tenant": "contoso", "id": a, "patch": {"exchangeAlias": f"v{i}"}} for i in range(25)]
    result = await r.run(r.job(lines))
    assert result.counts["succeeded"] == 25
    assert r.emu.state()["tenants"]["contoso"]["exchangeConnectors"][a]["exchangeAlias"] == "v24"


async def test_sync_is_sent_at_most_once(rehearsal: Start) -> None:
    """A sync answered 500 may have happened: it is reported 'uncertain' and not sent again."""
    r = await rehearsal(tenants=1, connectors_per_tenant=3, faults=Faults(p500=1.0))
    a = r.connectors("contoso")[0]["id"]
    result = await r.run(r.job([{"tenant": "contoso", "id": a, "action": "sync", "syncType": "fullSync"}]))
    assert result.counts == Counter({"uncertain": 1})
    assert r.emu.stats()["writes_total"] == 1


async def test_503_retry_uses_a_new_connection(rehearsal: Start) -> None:
    """After a 503 the retry goes over a new connection (Graph's best practice)."""
    r = await rehearsal(tenants=1, connectors_per_tenant=20, faults=Faults(p503=0.3), seed=5)
    lines = r.patch_all(["contoso"], _change)
    settings = EngineSettings(batch_size=1, concurrency=1, tenant_concurrency=1, seed=1, policy=FAST_RETRY)
    result = await r.run(r.job(lines), settings=settings)
    assert result.counts["succeeded"] == 20
    stats = r.emu.stats()
    assert stats["faults_total"] > 0
    assert stats["connections_total"] >= 1 + stats["faults_total"]


async def test_intune_style_errors_are_readable_in_the_report(rehearsal: Start) -> None:
    """Against --intune-errors, a 404's report message is Intune's inner Message with the Activity ID."""
    r = await rehearsal(tenants=1, connectors_per_tenant=2, intune_errors=True)
    result = await r.run(r.job([{"tenant": "contoso", "id": "no-such-connector", "patch": {"version": "1"}}]))
    assert result.counts == Counter({"failed": 1})
    _, (line,), _ = read_report(r.dir / "report.jsonl")
    assert line["error"]["code"] == "ResourceNotFound"
    assert line["error"]["message"].startswith("DeviceManagementExchangeConnector with id 'no-such-connector'")
    assert f"Activity ID: {line['request_id']}" in line["error"]["message"]


async def test_many_tenants_each_with_a_few_operations(rehearsal: Start) -> None:
    """An MSP run: 100 tenants x 3 objects; one token request per tenant, every change applied."""
    r = await rehearsal(tenants=100, connectors_per_tenant=3)
    aliases = [t.alias for t in r.emu.core.world.tenants.values()]
    lines = r.patch_all(aliases, _change)
    result = await r.run(r.job(lines))
    assert result.counts == Counter({"succeeded": 300})
    assert set(r.emu.stats()["token_requests"].values()) == {1}
    _assert_applied(r, lines)
