"""Skip-unchanged and conflict decisions, backup records, the undo job built from a report, and export lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator.state import generate_world
from bulkconn.jobscan import scan_job
from bulkconn.model import Action, Operation
from bulkconn.precheck import SkipCode, backup_for, backup_record, decide, read_backup
from bulkconn.registry import resource, validate_patch
from bulkconn.rollback import RollbackError, build_undo, export_line

CONNECTORS = resource("exchangeConnectors")
AT = "2026-11-28T18:00:00.000Z"


def _op(key: str, object_id: str, patch: dict[str, Any], tenant: str = "contoso") -> Operation:
    return Operation(key, 1, tenant, "exchangeConnector", object_id, Action.UPDATE, patch)


def _result(key: str, object_id: str, status: str, action: str = "update") -> dict[str, Any]:
    return {"type": "result", "key": key, "tenant": "contoso", "id": object_id, "action": action, "status": status}


def _backup(key: str, object_id: str, current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return dict(backup_record(backup_for(_op(key, object_id, patch), current), at=AT))


HEADER = {"type": "header", "format": 1}


def test_skip_unchanged_only_when_every_patched_value_is_already_there() -> None:
    """--skip-unchanged skips a satisfied patch with a reason, and sends one that changes anything."""
    current = {"id": "A", "serverName": "mail.contoso.com", "status": "connected"}
    reason = decide(CONNECTORS, current, {"serverName": "mail.contoso.com"}, skip_unchanged=True)
    assert reason is not None and reason.code is SkipCode.UNCHANGED and "serverName" in reason.message
    assert decide(CONNECTORS, current, {"serverName": "x", "status": "connected"}, skip_unchanged=True) is None
    assert decide(CONNECTORS, current, {"serverName": "mail.contoso.com"}, skip_unchanged=False) is None


def test_an_undo_line_leaves_an_object_changed_by_someone_else_unless_forced() -> None:
    """expect differs from the current value: Conflict naming the property; --force sends; already restored: Unchanged."""
    current = {"id": "A", "serverName": "someone-else.contoso.com"}
    restore, expect = {"serverName": "old.contoso.com"}, {"serverName": "new.contoso.com"}
    reason = decide(CONNECTORS, current, restore, skip_unchanged=False, expect=expect)
    assert reason is not None and reason.code is SkipCode.CONFLICT
    assert '\'serverName\' is now "someone-else.contoso.com", bulkconn wrote "new.contoso.com"' in reason.message
    assert decide(CONNECTORS, current, restore, skip_unchanged=False, expect=expect, force=True) is None
    assert decide(CONNECTORS, {"serverName": "new.contoso.com"}, restore, skip_unchanged=False, expect=expect) is None
    done = decide(CONNECTORS, {"serverName": "old.contoso.com"}, restore, skip_unchanged=False, expect=expect)
    assert done is not None and done.code is SkipCode.UNCHANGED


def test_backup_holds_exactly_the_patched_properties_and_round_trips() -> None:
    """The pre-image is the current values of the patched properties only (omitted = null), and reads back."""
    current = {
        "@odata.type": "#microsoft.graph.deviceManagementExchangeConnector",
        "id": "A",
        "serverName": "old",
        "status": "connected",
        "version": "1",
    }
    record = _backup("1", "A", current, {"serverName": "new", "exchangeAlias": "x"})
    assert record["before"] == {"serverName": "old", "exchangeAlias": None}
    assert record["patch"] == {"serverName": "new", "exchangeAlias": "x"}
    backup = read_backup(orjson.loads(orjson.dumps(record)))
    assert backup is not None and backup.odata_type == current["@odata.type"] and backup.key == "1"
    assert read_backup({**record, "before": {"serverName": "old"}}) is None  # not the same properties


def test_undo_restores_succeeded_patches_only_and_lists_what_it_cannot_undo() -> None:
    """Succeeded: an undo line with expect; failed/skipped: none; sync and un-backed-up writes: listed."""
    records = [
        HEADER,
        _backup("1", "A", {"serverName": "a-old"}, {"serverName": "a-new"}),
        _backup("2", "B", {"serverName": "b-old"}, {"serverName": "b-new"}),
        _backup("3", "C", {"serverName": "c-old"}, {"serverName": "c-new"}),
        _result("1", "A", "succeeded"),
        _result("2", "B", "failed"),
        _result("3", "C", "skipped"),
        _result("4", "D", "succeeded", action="sync"),
        _result("5", "E", "succeeded"),
    ]
    undo = build_undo(records, source="r.jsonl")
    assert undo.lines == [
        {
            "tenant": "contoso",
            "id": "A",
            "resource": "exchangeConnector",
            "key": "undo:contoso:A",
            "patch": {"serverName": "a-old"},
            "expect": {"serverName": "a-new"},
        }
    ]
    assert (undo.operations, undo.no_undo_needed, undo.unconfirmed) == (1, 2, 0)
    assert [(n.key, n.reason) for n in undo.not_undone] == [
        ("4", "a sync cannot be undone"),
        ("5", "no pre-image recorded (run without --backup)"),
    ]


def test_two_writes_to_one_object_fold_and_a_resumed_backup_never_replaces_the_first() -> None:
    """Each property goes back to its value before the first write and is expected at the last one."""
    records = [
        HEADER,
        _backup("1", "A", {"serverName": "orig", "version": "v1"}, {"serverName": "mid"}),
        None,  # a torn line: the run died here after its write landed
        HEADER,
        _backup("1", "A", {"serverName": "mid"}, {"serverName": "mid"}),  # resumed: pre-image already the new value
        _result("1", "A", "succeeded"),
        _backup("2", "A", {"serverName": "mid", "version": "v1"}, {"serverName": "last", "version": "v2"}),
        _backup("3", "B", {"serverName": "b"}, {"serverName": "b2"}),  # died before its result: unconfirmed
    ]
    undo = build_undo(records, source="r.jsonl")
    by_id = {line["id"]: line for line in undo.lines}
    assert by_id["A"]["patch"] == {"serverName": "orig", "version": "v1"}
    assert by_id["A"]["expect"] == {"serverName": "last", "version": "v2"}
    assert (undo.operations, undo.unconfirmed) == (3, 2)


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([HEADER, _result("1", "A", "succeeded")], "no pre-images: the run was made without --backup"),
        ([_result("1", "A", "succeeded")], "not a bulkconn report"),
        ([{"type": "header", "format": 2}], "format 2"),
        ([], "empty"),
    ],
)
def test_reports_that_cannot_be_rolled_back_are_refused_clearly(records: list[dict[str, Any]], words: str) -> None:
    """No pre-images, not a report, an unknown format: a usage error naming the report, never a traceback."""
    with pytest.raises(RollbackError, match=words) as caught:
        build_undo(records, source="r.jsonl")
    assert str(caught.value).startswith("r.jsonl")


def test_export_line_holds_the_writable_properties_and_validates_as_a_job_line(tmp_path: Any) -> None:
    """An exported object becomes a job line that passes today's job validation unchanged."""
    obj = {
        "@odata.type": "#microsoft.graph.deviceManagementExchangeConnector",
        "id": "d5f4b3b2-e4b0-4ce6-8741-c7a87ce42c82",
        "serverName": "mail1.contoso.com",
        "status": "connected",
        "exchangeAlias": None,
        "lastSyncDateTime": "2026-01-01T10:00:00Z",
    }
    line = export_line(obj, tenant="contoso", collection=CONNECTORS)
    assert "id" not in line["patch"] and "@odata.type" not in line["patch"]
    assert validate_patch(CONNECTORS, line["patch"]) == []
    job = tmp_path / "export.jsonl"
    job.write_bytes(orjson.dumps(line) + b"\n")
    invalid: list[Any] = []
    assert scan_job(job, ["contoso"], on_invalid=invalid.append).valid == 1, invalid


def test_the_documented_export_line_is_what_export_writes_for_the_default_world() -> None:
    """docs/selectors-plan-rollback.md quotes the export of the first contoso connector of `emulator serve`."""
    world = generate_world(tenants=3, connectors_per_tenant=20, seed=1)
    contoso = next(t for t in world.tenants.values() if t.alias == "contoso")
    line = export_line(
        contoso.connectors["d5f4b3b2-e4b0-4ce6-8741-c7a87ce42c82"], tenant="contoso", collection=CONNECTORS
    )
    doc = (Path(__file__).parent.parent / "docs" / "selectors-plan-rollback.md").read_text()
    assert orjson.dumps(line).decode() in doc


def test_an_undo_line_names_the_type_only_where_the_collection_needs_it() -> None:
    """A connector (concrete type): no @odata.type in the undo patch; an abstract collection's object keeps its own."""
    connector = {"@odata.type": "#microsoft.graph.deviceManagementExchangeConnector", "serverName": "old"}
    derived = "#microsoft.graph.windows10GeneralConfiguration"
    configuration = Operation("2", 2, "contoso", "deviceConfigurations", "B", Action.UPDATE, {"description": "new"})
    records = [
        HEADER,
        _backup("1", "A", connector, {"serverName": "new"}),
        dict(backup_record(backup_for(configuration, {"@odata.type": derived, "description": "old"}), at=AT)),
        _result("1", "A", "succeeded"),
        _result("2", "B", "succeeded"),
    ]
    first, second = build_undo(records, source="r.jsonl").lines
    assert first["patch"] == {"serverName": "old"}
    assert second["patch"] == {"@odata.type": derived, "description": "old"}
