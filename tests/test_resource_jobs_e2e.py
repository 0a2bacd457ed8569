"""The jobs/intune examples and other collections' jobs, end to end over the real emulator: each change lands, in
$batch envelopes; a resume after an interruption sends nothing twice; invalid lines name the property."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator import Emulator
from bulkconn.emulator.artifacts import write_job
from bulkconn.emulator.seeding import SEEDED
from bulkconn.jobscan import scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.model import Operation
from bulkconn.resume import plan_resume
from bulkconn.targets import resolve_resource
from tests.conftest import Rehearsal, read_report, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets

EXAMPLES = sorted((Path(__file__).parent.parent / "jobs" / "intune").iterdir())
AUTOPILOT_CSV = Path(__file__).parent.parent / "jobs" / "intune" / "autopilot-group-tags.csv"
FAST = {"time_scale": 0.05, "tenants": 3, "connectors_per_tenant": 20}  # `emulator serve` defaults
Start = Callable[..., Awaitable[Rehearsal]]


def _operations(job: Path, tenants: list[str]) -> list[Operation]:
    scan = scan_job(job, tenants, on_invalid=lambda item: pytest.fail(item.message))
    ops: list[Operation] = []
    for alias in scan.offsets:
        reader = LaneReader(scan, alias)
        ops += reader.read(10_000)
        reader.close()
    return ops


def _stored(emu: Emulator, op: Operation) -> dict[str, Any]:
    return tenant(emu, op.tenant).store(resolve_resource(op.resource).name)[op.object_id.lower()]


def _assert_landed(emu: Emulator, ops: list[Operation]) -> None:
    """Every patched property and every updateDeviceProperties parameter holds the job's value."""
    for op in ops:
        wanted = op.patch if op.action == "update" else op.params
        stored = _stored(emu, op)
        assert {k: stored.get(k) for k in wanted if k != "@odata.type"} == {
            k: v for k, v in wanted.items() if k != "@odata.type"
        }, (op.line, op.object_id)


@pytest.mark.parametrize("job", EXAMPLES, ids=[j.name for j in EXAMPLES])
async def test_intune_examples_run_against_the_default_emulator(job: Path, rehearsal: Start) -> None:
    """Each jobs/intune example succeeds line for line against `emulator serve`'s defaults, in $batch envelopes, and
    the emulator's objects hold the new values."""
    world = await rehearsal(**FAST)
    ops = _operations(job, list(world.config().tenants))
    before = world.emu.core.stats.batches_total
    result = await world.run(job)
    assert result.counts == Counter({"succeeded": len(ops)})
    assert world.emu.core.stats.batches_total > before  # the engine's default batch size: $batch
    _assert_landed(world.emu, ops)
    _, results, _ = read_report(world.dir / "report.jsonl")
    assert {r["action"] for r in results} == {ops[0].action}


@pytest.mark.parametrize("collection", SEEDED)
async def test_the_emulators_sample_job_of_each_seeded_collection_runs(collection: str, rehearsal: Start) -> None:
    """`emulator serve --write-job-resource C` lines (patches, @odata.type inside the patch, Autopilot actions)
    run through bulkconn, and every change lands."""
    world = await rehearsal(time_scale=0.05, objects_per_collection=4)
    job = world.dir / "sample.jsonl"
    write_job(world.emu.core, job, 8, resource=collection)
    ops = _operations(job, list(world.config().tenants))
    result = await world.run(job)
    assert result.counts == Counter({"succeeded": 8})
    _assert_landed(world.emu, ops)


def _cut_report(report: Path, keep_results: int, *, drop_actions: frozenset[str] = frozenset()) -> None:
    """Leave the report as a crash would: the header, the first results, maybe intents without their results."""
    kept: list[bytes] = []
    results = 0
    for raw in report.read_bytes().splitlines():
        record = orjson.loads(raw)
        if record["type"] == "summary":
            continue
        if record["type"] == "result":
            if record["action"] in drop_actions:
                continue
            results += 1
            if results > keep_results:
                continue
        kept.append(raw)
    report.write_bytes(b"\n".join(kept) + b'\n{"type": "res')


async def _resume(world: Rehearsal, job: Path) -> dict[str, Any]:
    plan = plan_resume(
        job, world.dir / "report.jsonl", retry_failed=False, recheck_invalid=False, resend_uncertain=False, force=False
    )
    result = await world.run(job, resumed=True, skip_keys=plan.skip_keys, prefill=plan.prefill)
    return {"counts": result.counts, "skipped": plan.skip_keys}


async def test_resume_after_an_interruption_sends_only_what_has_no_result(rehearsal: Start) -> None:
    """The Autopilot CSV is cut after 5 results: the resume sends the other 10, each device's final state is
    the CSV's, and the first 5 devices got the action exactly once."""
    world = await rehearsal(**FAST)
    ops = _operations(AUTOPILOT_CSV, list(world.config().tenants))
    await world.run(AUTOPILOT_CSV)
    _cut_report(world.dir / "report.jsonl", keep_results=5)
    resumed = await _resume(world, AUTOPILOT_CSV)
    assert len(resumed["skipped"]) == 5 and resumed["counts"] == Counter({"succeeded": 10})
    calls = {
        op.object_id: world.emu.core.stats.collections[op.tenant][op.resource].actions[op.action][op.object_id.lower()]
        for op in ops
    }
    finished_first = {op.object_id for op in ops if op.key in resumed["skipped"]}
    assert {calls[oid] for oid in finished_first} == {1}
    assert {calls[oid] for oid in calls.keys() - finished_first} == {2}  # their results were lost: sent again
    _assert_landed(world.emu, ops)


async def test_a_wipe_whose_result_was_lost_is_not_sent_again(rehearsal: Start) -> None:
    """Wipes are not idempotent: a run cut after their intent (no result) resumes with them 'uncertain', never
    sent a second time, while the idempotent Autopilot update beside them is redone."""
    world = await rehearsal(**FAST)
    devices = list(tenant(world.emu, "contoso").store("managedDevices").values())[:3]
    autopilot = next(iter(tenant(world.emu, "contoso").store("windowsAutopilotDeviceIdentities").values()))
    lines: list[dict[str, Any]] = [{"resource": "managedDevices", "id": d["id"], "action": "wipe"} for d in devices]
    lines.append(
        {
            "resource": "windowsAutopilotDeviceIdentities",
            "id": autopilot["id"],
            "action": "updateDeviceProperties",
            "params": {"groupTag": "Returned"},
        }
    )
    job = world.job([{"defaults": {"tenant": "contoso"}}, *lines])
    await world.run(job)
    _cut_report(world.dir / "report.jsonl", keep_results=0, drop_actions=frozenset({"wipe", "updateDeviceProperties"}))
    resumed = await _resume(world, job)
    assert resumed["counts"] == Counter({"uncertain": 3, "succeeded": 1})
    wipes = world.emu.core.stats.collections["contoso"]["managedDevices"].actions["wipe"]
    assert [wipes[d["id"].lower()] for d in devices] == [1, 1, 1]
    _, results, _ = read_report(world.dir / "report.jsonl")
    settled = [r for r in results if r["action"] == "wipe"]
    assert {(r["status"], r["error"]["code"]) for r in settled} == {("uncertain", "UncertainAction")}


async def test_invalid_lines_name_the_property_and_are_never_sent(rehearsal: Start) -> None:
    """A job mixing good lines and mistakes: the mistakes are invalid results naming the property, only the good
    lines reach the emulator."""
    world = await rehearsal(**FAST)
    category = next(iter(tenant(world.emu, "contoso").store("deviceCategories").values()))
    policy = next(iter(tenant(world.emu, "contoso").store("deviceCompliancePolicies").values()))
    device = next(iter(tenant(world.emu, "contoso").store("windowsAutopilotDeviceIdentities").values()))
    cat = {"resource": "deviceCategories", "id": category["id"]}
    pol = {"resource": "deviceCompliancePolicies", "id": policy["id"]}
    dev = {"resource": "windowsAutopilotDeviceIdentities", "id": device["id"]}
    lines = [
        {"defaults": {"tenant": "contoso"}},
        {**cat, "patch": {"displayName": "Renamed"}},
        {**cat, "patch": {"displayname": "typo"}},
        {**cat, "patch": {"description": 42}},
        {**pol, "patch": {"description": "no type"}},
        {**dev, "action": "updateDeviceProperty", "params": {"groupTag": "x"}},
        {**dev, "action": "updateDeviceProperties", "params": {"groupTag": ["x"]}},
    ]
    result = await world.run(world.job(lines))
    assert result.counts == Counter({"succeeded": 1, "invalid": 5})
    _, results, _ = read_report(world.dir / "report.jsonl")
    messages = {r["line"]: r["error"]["message"] for r in results if r["status"] == "invalid"}
    assert "'displayname' is not a property of 'deviceCategory' (did you mean 'displayName'?)" in messages[3]
    assert "'description' must be text, not a number" in messages[4]
    assert "'deviceCompliancePolicy' is abstract" in messages[5] and "'@odata.type'" in messages[5]
    assert "unknown action \"updateDeviceProperty\" (did you mean 'updateDeviceProperties'?)" in messages[6]
    assert "'groupTag' must be text, not a list" in messages[7]
    assert world.emu.core.stats.collections["contoso"]["deviceCategories"].patches == 1
    assert tenant(world.emu, "contoso").store("deviceCategories")[category["id"].lower()]["displayName"] == "Renamed"
    assert not world.emu.core.stats.collections["contoso"]["windowsAutopilotDeviceIdentities"].actions


async def test_selector_lines_work_on_other_collections(rehearsal: Start) -> None:
    """'where' over an abstract collection (its @odata.type) and a plain one, in every tenant: exactly the matching
    objects change, each PATCH sent with the concrete type."""
    world = await rehearsal(**FAST)
    w10 = "#microsoft.graph.windows10CompliancePolicy"
    lines = [
        {
            "tenant": "*",
            "resource": "deviceCompliancePolicies",
            "where": {"@odata.type": w10},
            "patch": {"description": "BitLocker required by the security baseline"},
        },
        {
            "tenant": "*",
            "resource": "deviceCategories",
            "where": {"displayName": "Kiosks"},
            "patch": {"description": "K"},
        },
    ]
    result = await world.run(world.job(lines))
    policies = [
        p
        for a in ("contoso", "fabrikam", "northwind")
        for p in tenant(world.emu, a).store("deviceCompliancePolicies").values()
    ]
    kiosks = [
        c
        for a in ("contoso", "fabrikam", "northwind")
        for c in tenant(world.emu, a).store("deviceCategories").values()
        if c["displayName"] == "Kiosks"
    ]
    changed = [p for p in policies if p["description"] == "BitLocker required by the security baseline"]
    assert changed == [p for p in policies if p["@odata.type"] == w10] and len(changed) == 9
    assert [c["description"] for c in kiosks] == ["K", "K", "K"]
    assert result.counts == Counter({"succeeded": 12})
