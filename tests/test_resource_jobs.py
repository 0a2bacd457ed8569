"""Job lines for any /deviceManagement collection: resource, patch or bound action with params, @odata.type, CSV
typing, validation messages that name the line and the property, and per-action idempotency (retries, intents,
resume). Pure or in virtual time; the end-to-end runs against the emulator are in test_resource_jobs_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.batching import envelope, request_for
from bulkconn.engine import EngineSettings
from bulkconn.errors import JobError
from bulkconn.fingerprint import fingerprint
from bulkconn.jobline import Invalid
from bulkconn.jobscan import scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.model import Action, Operation
from bulkconn.precheck import backup_for, backup_record
from bulkconn.registry import resource
from bulkconn.report import format as fmt
from bulkconn.resources import EXCHANGE_CONNECTOR
from bulkconn.resume import plan_resume
from bulkconn.rollback import build_undo
from bulkconn.targets import resolve_resource
from bulkconn.transport import HttpRequest, HttpResponse
from tests.engine_harness import POLICY, run_engine
from tests.fakes import respond

TENANTS = ["contoso", "fabrikam"]
ID1, ID2 = "5121f91b-f670-47e1-8863-7ce2e65dc7b6", "1b094078-eecb-4782-b235-5f590d8aac61"
AUTOPILOT = "windowsAutopilotDeviceIdentities"
COMPLIANCE = "deviceCompliancePolicies"
W10 = "#microsoft.graph.windows10CompliancePolicy"
SINGLE = EngineSettings(batch_size=1, seed=1, policy=POLICY)


def _scan(tmp_path: Path, lines: list[Any], name: str = "job.jsonl") -> tuple[list[Operation], list[Invalid]]:
    path = tmp_path / name
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return _read(path)


def _read(path: Path) -> tuple[list[Operation], list[Invalid]]:
    invalid: list[Invalid] = []
    scan = scan_job(path, TENANTS, on_invalid=invalid.append)
    ops: list[Operation] = []
    for tenant in scan.offsets:
        reader = LaneReader(scan, tenant)
        ops += reader.read(1000)
        reader.close()
    return sorted(ops, key=lambda op: op.line), invalid


def _one(tmp_path: Path, line: dict[str, Any], **defaults: Any) -> Operation:
    ops, invalid = _scan(tmp_path, [{"defaults": defaults}, line] if defaults else [line])
    assert invalid == []
    (op,) = ops
    return op


def _problem(tmp_path: Path, line: dict[str, Any], **defaults: Any) -> str:
    ops, invalid = _scan(tmp_path, [{"defaults": defaults}, line] if defaults else [line])
    assert ops == []
    (bad,) = invalid
    return bad.message


def test_resolve_resource_takes_collections_and_the_historical_name() -> None:
    """'exchangeConnector' (and no resource at all) is the exchangeConnectors collection; others by their URL name."""
    assert (
        resolve_resource("exchangeConnector")
        == resolve_resource("exchangeConnectors")
        == resource("exchangeConnectors")
    )
    assert resolve_resource("deviceCategories").path == "deviceManagement/deviceCategories"


def test_a_patch_of_another_collection_is_sent_with_the_declared_type(tmp_path: Path) -> None:
    """A deviceCategories line is a PATCH of that object, its body typed as the collection's (concrete) type."""
    op = _one(tmp_path, {"tenant": "contoso", "resource": "deviceCategories", "id": ID1, "patch": {"displayName": "X"}})
    assert (op.action, op.idempotent) == ("update", True)
    request = request_for(op)
    assert (request.method, request.url) == ("PATCH", f"/deviceManagement/deviceCategories/{ID1}")
    assert request.body == {"@odata.type": "#microsoft.graph.deviceCategory", "displayName": "X"}


def test_an_action_line_posts_its_params_to_the_object(tmp_path: Path) -> None:
    """'action' + 'params' is a POST of the params to {item}/{action}; defaults' params merge under the line's."""
    line = {"id": ID2, "action": "updateDeviceProperties", "params": {"groupTag": "Sales"}}
    op = _one(tmp_path, line, tenant="contoso", resource=AUTOPILOT, params={"displayName": "D", "groupTag": "x"})
    assert (op.action, op.params, op.idempotent) == (
        "updateDeviceProperties",
        {"displayName": "D", "groupTag": "Sales"},
        True,
    )
    request = request_for(op)
    assert request.method == "POST"
    assert request.url == f"/deviceManagement/{AUTOPILOT}/{ID2}/updateDeviceProperties"
    assert request.body == {"displayName": "D", "groupTag": "Sales"}


def test_legacy_sync_and_sync_with_params_are_the_same_operation(tmp_path: Path) -> None:
    """'"syncType": X' is the sync action with params {syncType: X}; the report still says 'sync'."""
    legacy = _one(tmp_path, {"tenant": "contoso", "id": ID1, "action": "sync", "syncType": "deltaSync"})
    new = _one(tmp_path, {"tenant": "contoso", "id": ID1, "action": "sync", "params": {"syncType": "deltaSync"}})
    assert request_for(legacy) == request_for(new)
    assert (legacy.action, legacy.sync_type, legacy.idempotent) == ("sync", "deltaSync", False)
    assert fmt.intent(legacy, at="t")["action"] == "sync"


def test_abstract_type_is_named_per_line_or_in_the_defaults(tmp_path: Path) -> None:
    """@odata.type on the line or in the defaults picks the concrete type; the PATCH body carries it."""
    line = {"tenant": "contoso", "resource": COMPLIANCE, "id": ID1, "patch": {"description": "d"}}
    per_line = _one(tmp_path, {**line, "@odata.type": W10})
    in_defaults = _one(tmp_path, line, **{"@odata.type": W10})
    assert request_for(per_line).body == request_for(in_defaults).body == {"@odata.type": W10, "description": "d"}
    type_specific = _one(tmp_path, {**line, "@odata.type": W10, "patch": {"bitLockerEnabled": True}})
    assert type_specific.patch == {"bitLockerEnabled": True}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # a typo in a property, with the nearest name
        (
            {"resource": "deviceCategories", "patch": {"displayname": "x"}},
            "line 1: 'displayname' is not a property of 'deviceCategory' (did you mean 'displayName'?)",
        ),
        # a wrong type, naming the property
        (
            {"resource": "deviceCategories", "patch": {"displayName": 5}},
            "line 1: 'displayName' must be text, not a number",
        ),
        # an abstract type without @odata.type lists the concrete kinds
        (
            {"resource": COMPLIANCE, "patch": {"description": "x"}},
            "line 1: 'deviceCompliancePolicy' is abstract: say which kind of object this is with '@odata.type'",
        ),
        # a property of another derived type
        (
            {
                "resource": COMPLIANCE,
                "@odata.type": "#microsoft.graph.iosCompliancePolicy",
                "patch": {"bitLockerEnabled": True},
            },
            "line 1: 'bitLockerEnabled' is not a property of 'iosCompliancePolicy'",
        ),
        # an unknown action, with the nearest one
        (
            {"resource": AUTOPILOT, "action": "updateDeviceProperty", "params": {"groupTag": "x"}},
            "line 1: unknown action \"updateDeviceProperty\" (did you mean 'updateDeviceProperties'?) (use 'update', ",
        ),
        # a parameter of the wrong type, and a misspelt one
        (
            {"resource": AUTOPILOT, "action": "updateDeviceProperties", "params": {"groupTag": 7}},
            "line 1: 'groupTag' must be text, not a number",
        ),
        (
            {"resource": AUTOPILOT, "action": "updateDeviceProperties", "params": {"grouptag": "x"}},
            "line 1: 'grouptag' is not a parameter of updateDeviceProperties (did you mean 'groupTag'?)",
        ),
        # a collection without PATCH says which action to use
        (
            {"resource": AUTOPILOT, "patch": {"groupTag": "x"}},
            "line 1: Autopilot devices cannot be patched; use the updateDeviceProperties",
        ),
        # a read-only property says why
        (
            {"resource": COMPLIANCE, "@odata.type": W10, "patch": {"version": 3}},
            "line 1: 'version' cannot be set: it is the policy's version",
        ),
        # an unknown collection, with the nearest one
        ({"resource": "deviceCategory", "patch": {"displayName": "x"}}, "(did you mean 'deviceCategories'?)"),
        # params on a PATCH, a patch on an action
        (
            {"resource": "deviceCategories", "params": {"x": 1}, "patch": {"displayName": "x"}},
            "an 'update' line takes no 'params'",
        ),
        (
            {"resource": AUTOPILOT, "action": "updateDeviceProperties", "patch": {"groupTag": "x"}},
            "a 'updateDeviceProperties' line takes no 'patch'",
        ),
        # a required parameter
        (
            {"resource": "managedDevices", "action": "cleanWindowsDevice"},
            "line 1: 'keepUserData' is required by cleanWindowsDevice",
        ),
    ],
)
def test_validation_names_the_line_and_the_property(tmp_path: Path, line: dict[str, Any], expected: str) -> None:
    """Each mistake is an invalid line, before anything is sent, whose message names the property and a near name."""
    message = _problem(tmp_path, {"tenant": "contoso", "id": ID1, **line})
    assert message.startswith(expected) if expected.startswith("line") else expected in message, message


def test_exchange_connector_lines_keep_the_seed_table_and_its_messages(tmp_path: Path) -> None:
    """Connector lines validate as they always have: null lastSyncDateTime accepted (the seed table, not the CSDL)."""
    ops, invalid = _scan(
        tmp_path,
        [
            {"tenant": "contoso", "id": ID1, "patch": {"lastSyncDateTime": None, "serverName": "a"}},
            {"tenant": "contoso", "id": ID1, "resource": "exchangeConnectors", "patch": {"serverName": 5}},
            {"tenant": "contoso", "id": ID1, "action": "syncc", "syncType": "fullSync"},
        ],
    )
    assert [op.patch for op in ops] == [{"lastSyncDateTime": None, "serverName": "a"}]
    assert [i.message for i in invalid] == [
        "line 2: property 'serverName' must be a string, not a number",
        "line 3: unknown action \"syncc\" (did you mean 'sync'?) (use 'update' or 'sync')",
    ]
    assert set(EXCHANGE_CONNECTOR.properties) == set(resource("exchangeConnectors").entity_type.properties)


def test_collection_bound_action_posts_to_the_collection_without_an_id(tmp_path: Path) -> None:
    """An action bound to the collection ('import') names no id and is posted to the collection itself."""
    imported = "importedWindowsAutopilotDeviceIdentities"
    devices = [{"serialNumber": "PF123", "hardwareIdentifier": "aGk="}]
    op = _one(
        tmp_path,
        {
            "tenant": "contoso",
            "resource": imported,
            "action": "import",
            "params": {"importedWindowsAutopilotDeviceIdentities": devices},
        },
    )
    assert request_for(op).url == f"/deviceManagement/{imported}/import"
    message = _problem(tmp_path, {"tenant": "contoso", "resource": imported, "id": ID1, "action": "import"})
    assert message == "line 1: 'import' acts on the whole collection: its line names no 'id'"


def test_a_batch_mixes_collections_patches_and_actions(tmp_path: Path) -> None:
    """One $batch envelope holds a PATCH of a category, a policy of a concrete type and an Autopilot action."""
    ops, invalid = _scan(
        tmp_path,
        [
            {"tenant": "contoso", "resource": "deviceCategories", "id": ID1, "patch": {"displayName": "A"}},
            {"tenant": "contoso", "resource": COMPLIANCE, "id": ID1, "@odata.type": W10, "patch": {"description": "B"}},
            {
                "tenant": "contoso",
                "resource": AUTOPILOT,
                "id": ID2,
                "action": "updateDeviceProperties",
                "params": {"groupTag": "C"},
            },
        ],
    )
    assert invalid == []
    requests = orjson.loads(envelope(ops))["requests"]
    assert [(r["method"], r["url"], r["body"]) for r in requests] == [
        (
            "PATCH",
            f"/deviceManagement/deviceCategories/{ID1}",
            {"@odata.type": "#microsoft.graph.deviceCategory", "displayName": "A"},
        ),
        ("PATCH", f"/deviceManagement/{COMPLIANCE}/{ID1}", {"@odata.type": W10, "description": "B"}),
        ("POST", f"/deviceManagement/{AUTOPILOT}/{ID2}/updateDeviceProperties", {"groupTag": "C"}),
    ]


def test_csv_chooses_its_resource_per_row_and_types_cells_by_the_registry(tmp_path: Path) -> None:
    """A 'resource' column picks each row's collection; cells become booleans, numbers, enums, dates or JSON."""
    path = tmp_path / "mixed.csv"
    path.write_text(
        "tenant,resource,action,@odata.type,id,groupTag,bitLockerEnabled,passwordMinimumLength,passwordRequiredType,"
        "description,keepUserData\n"
        f"contoso,{AUTOPILOT},updateDeviceProperties,,{ID2},Sales,,,,,\n"
        f"contoso,{COMPLIANCE},,{W10},{ID1},,TRUE,8,alphanumeric,#null,\n"
        f"contoso,managedDevices,cleanWindowsDevice,,{ID1},,,,,,false\n"
    )
    ops, invalid = _read(path)
    assert invalid == []
    assert [(op.action, op.params, op.patch) for op in ops] == [
        ("updateDeviceProperties", {"groupTag": "Sales"}, {}),
        (
            "update",
            {},
            {
                "bitLockerEnabled": True,
                "passwordMinimumLength": 8,
                "passwordRequiredType": "alphanumeric",
                "description": None,
            },
        ),
        ("cleanWindowsDevice", {"keepUserData": False}, {}),
    ]
    assert ops[1].odata_type == W10


def test_csv_cells_that_are_not_their_type_are_invalid_lines_naming_the_property(tmp_path: Path) -> None:
    """A number column with text, a boolean with 'yes': the row is invalid and the message names the column."""
    path = tmp_path / "bad.csv"
    path.write_text(
        f"tenant,resource,@odata.type,id,passwordMinimumLength,bitLockerEnabled\n"
        f"contoso,{COMPLIANCE},{W10},{ID1},eight,\n"
        f"contoso,{COMPLIANCE},{W10},{ID1},,yes\n"
    )
    _, invalid = _read(path)
    assert [i.message for i in invalid] == [
        "line 2: 'passwordMinimumLength' must be a whole number, not text",
        "line 3: 'bitLockerEnabled' must be true or false, not text",
    ]


def test_csv_with_a_resource_column_still_refuses_a_misspelt_header_once(tmp_path: Path) -> None:
    """With a 'resource' column any registry property may be a column; a typo still stops the job once."""
    path = tmp_path / "typo.csv"
    path.write_text(f"tenant,resource,action,id,grouptag\ncontoso,{AUTOPILOT},updateDeviceProperties,{ID2},x\n")
    with pytest.raises(JobError, match=r"typo.csv:1: unknown column 'grouptag' \(did you mean 'groupTag'\?\)"):
        _read(path)


def _server_error(request: HttpRequest) -> HttpResponse:
    return respond(503, body={"error": {"code": "ServiceUnavailable", "message": "busy"}})


def test_only_allow_listed_actions_are_retried_after_a_lost_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 to updateDeviceProperties (idempotent) is retried; to a wipe it ends uncertain after one send, intended
    first (so a resume never sends it twice)."""
    lines: list[dict[str, Any]] = [
        {
            "tenant": "contoso",
            "resource": AUTOPILOT,
            "id": ID2,
            "action": "updateDeviceProperties",
            "params": {"groupTag": "A"},
        },
        {"tenant": "contoso", "resource": "managedDevices", "id": ID1, "action": "wipe"},
    ]
    run = run_engine(tmp_path, monkeypatch, lines, _server_error, settings=SINGLE)
    by_line = run.by_line()
    assert (by_line[1].action, by_line[1].status, by_line[1].attempts) == ("updateDeviceProperties", "failed", 10)
    assert (by_line[2].action, by_line[2].status, by_line[2].attempts) == ("wipe", "uncertain", 1)
    assert [op.line for op in run.intents] == [2]


def test_a_wipe_in_flight_at_a_crash_is_settled_uncertain_not_resent(tmp_path: Path) -> None:
    """A report whose last record is the wipe's intent: the resume settles it as an uncertain 'wipe'."""
    job = tmp_path / "job.jsonl"
    job.write_bytes(
        orjson.dumps({"tenant": "contoso", "resource": "managedDevices", "id": ID1, "action": "wipe"}) + b"\n"
    )
    stamp = fingerprint(job)
    header = {"type": "header", "format": 1, "job_sha256": stamp.sha256, "job_bytes": stamp.size, "job_lines": 1}
    op = Operation("1", 1, "contoso", "managedDevices", ID1, "wipe")
    report = tmp_path / "report.jsonl"
    report.write_bytes(orjson.dumps(header) + b"\n" + fmt.encode(fmt.intent(op, at="t")))
    plan = plan_resume(job, report, retry_failed=False, recheck_invalid=False, resend_uncertain=False, force=False)
    assert plan.skip_keys == frozenset({"1"})
    (settled,) = plan.prefill
    assert (settled.action, settled.status) == ("wipe", "uncertain")
    assert settled.error is not None and settled.error.code == "UncertainAction"
    assert "while this wipe was being sent" in settled.error.message


def test_registry_says_which_actions_are_idempotent_and_undoable() -> None:
    """The flags rollback and retries read: only allow-listed actions; PATCH-like updateDeviceProperties is undoable."""
    autopilot = resource(AUTOPILOT).actions
    assert (autopilot["updateDeviceProperties"].idempotent, autopilot["updateDeviceProperties"].undoable) == (
        True,
        True,
    )
    assert (autopilot["assignUserToDevice"].idempotent, autopilot["assignUserToDevice"].undoable) == (True, False)
    for collection, name in [("managedDevices", "wipe"), ("managedDevices", "retire"), ("exchangeConnectors", "sync")]:
        action = resource(collection).actions[name]
        assert (action.idempotent, action.undoable) == (False, False), name
    assert Operation("1", 1, "t", "managedDevices", "x", Action.UPDATE).idempotent


def test_rollback_refuses_actions_and_says_so() -> None:
    """A report with a patched category (backed up), a wipe and an uncertain retire: only the patch is undone; the
    actions are listed as not undone, with the reason."""
    category = Operation("1", 1, "contoso", "deviceCategories", ID1, Action.UPDATE, {"displayName": "new"})
    backup = dict(backup_record(backup_for(category, {"id": ID1, "displayName": "old"}), at="t"))
    result: dict[str, Any] = {"type": "result", "tenant": "contoso", "status": "succeeded"}
    records: list[dict[str, Any]] = [
        {"type": "header", "format": 1},
        backup,
        result | {"key": "1", "id": ID1, "action": "update"},
        result | {"key": "2", "id": ID2, "action": "wipe"},
        result | {"key": "3", "id": ID2, "action": "retire", "status": "uncertain"},
    ]
    undo = build_undo(records, source="r.jsonl")
    assert [(line["resource"], line["patch"]) for line in undo.lines] == [("deviceCategories", {"displayName": "old"})]
    assert [(n.action, n.reason) for n in undo.not_undone] == [
        ("wipe", "a wipe cannot be undone"),
        ("retire", "a retire cannot be undone; it may or may not have happened"),
    ]
    assert not resource("managedDevices").actions["wipe"].undoable
