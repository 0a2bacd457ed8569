"""Plan: the exact diff per object, job order within an object, rendering, records and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkconn.emulator.state import generate_world
from bulkconn.expansion import Expander, operation_for
from bulkconn.model import Action, Operation
from bulkconn.plan import (
    EXIT_CHANGES_PENDING,
    EXIT_NOTHING_TO_CHANGE,
    EXIT_PLAN_ERRORS,
    PlanCounts,
    Planner,
    PlanState,
    entry_record,
    invalid_entry,
    read_entry,
    render_text,
    summary_record,
)
from bulkconn.registry import resource
from bulkconn.selectors import Selector, parse_selector
from bulkconn.values import Change

CONNECTORS = resource("exchangeConnectors")


def _op(key: str, object_id: str, patch: dict[str, Any], tenant: str = "contoso") -> Operation:
    return Operation(
        key, int(key) if key.isdigit() else 1, tenant, "exchangeConnector", object_id, Action.UPDATE, patch
    )


def _current(server: str) -> dict[str, Any]:
    return {"id": "A", "serverName": server, "status": "connected"}


def test_plan_shows_old_and_new_unchanged_and_missing() -> None:
    """A change lists property: old -> new; a satisfied patch is unchanged; a 404 is missing."""
    planner = Planner()
    change = planner.plan(_op("1", "A", {"serverName": "new"}), CONNECTORS, _current("old"))
    same = planner.plan(_op("2", "B", {"status": "connected"}), CONNECTORS, _current("x"))
    gone = planner.plan(_op("3", "C", {"status": "connected"}), CONNECTORS, None)
    assert (change.state, change.changes) == (PlanState.CHANGE, (Change("serverName", "old", "new"),))
    assert (same.state, same.changes) == (PlanState.UNCHANGED, ())
    assert gone.state is PlanState.MISSING


def test_a_second_line_for_one_object_is_diffed_against_what_the_first_would_write() -> None:
    """Job order holds in the plan as in the run: line 2 repeats line 1's value, so it changes nothing."""
    planner = Planner()
    first = planner.plan(_op("1", "A", {"serverName": "new"}), CONNECTORS, _current("old"))
    second = planner.plan(_op("2", "a", {"serverName": "new"}), CONNECTORS, _current("old"))
    other_tenant = planner.plan(_op("3", "A", {"serverName": "new"}, tenant="fabrikam"), CONNECTORS, _current("old"))
    assert [first.state, second.state, other_tenant.state] == [PlanState.CHANGE, PlanState.UNCHANGED, PlanState.CHANGE]


def test_sync_is_an_action_that_always_counts_as_pending() -> None:
    """A sync changes something by nature: never 'unchanged'."""
    op = Operation("s", 1, "contoso", "exchangeConnector", "A", Action.SYNC, sync_type="deltaSync")
    entry = Planner().plan(op, CONNECTORS, _current("x"))
    assert (entry.state, entry.detail) == (PlanState.ACTION, "deltaSync")


def test_exit_codes_tell_nothing_pending_and_errors_apart() -> None:
    """0 nothing to change, 4 changes pending, 1 when anything is missing or in error (errors win)."""
    planner = Planner()
    unchanged = planner.plan(_op("1", "A", {"status": "connected"}), CONNECTORS, _current("x"))
    changed = planner.plan(_op("2", "B", {"status": "disconnected"}), CONNECTORS, _current("x"))
    failed = Planner.failed(_op("3", "C", {"status": "connected"}), "403 Forbidden")
    codes = []
    for entries in ([unchanged], [unchanged, changed], [unchanged, changed, failed]):
        counts = PlanCounts()
        for entry in entries:
            counts.add(entry)
        codes.append(counts.exit_code())
    assert codes == [EXIT_NOTHING_TO_CHANGE, EXIT_CHANGES_PENDING, EXIT_PLAN_ERRORS]
    assert {EXIT_CHANGES_PENDING} & {0, 1, 2, 3, 130} == set()  # no clash with the CLI's other exit codes


def test_text_groups_by_tenant_and_quotes_values_as_json() -> None:
    """A tenant heading, property: old -> new with JSON values (null is not "null"), and the summary last."""
    planner = Planner()
    entries = [
        planner.plan(
            _op("1", "A", {"serverName": "new", "exchangeAlias": None}),
            CONNECTORS,
            {**_current("old"), "exchangeAlias": "null"},
        ),
        planner.plan(_op("2", "B", {"status": "connected"}, tenant="fabrikam"), CONNECTORS, _current("x")),
        invalid_entry("3", 3, "fabrikam", "", "update", "line 3: property 'x' does not exist"),
    ]
    counts = PlanCounts()
    lines = list(render_text(entries, counts))
    assert lines == [
        "tenant contoso",
        "  A (line 1):",
        '    serverName: "old" -> "new"',
        '    exchangeAlias: "null" -> null',
        "tenant fabrikam",
        "  B (line 2): no change",
        "  (no id) (line 3): error: line 3: property 'x' does not exist",
        "Plan: 1 to change, 0 actions to send, 1 unchanged, 0 not found, 1 errors.",
    ]
    assert counts.exit_code() == EXIT_PLAN_ERRORS


def test_jsonl_records_round_trip() -> None:
    """An --out record reads back to the same entry; the summary carries the exit code."""
    entry = Planner().plan(_op("1", "A", {"serverName": "new"}), CONNECTORS, _current("old"))
    record = orjson.loads(orjson.dumps(entry_record(entry)))
    assert record["changes"] == {"serverName": {"old": "old", "new": "new"}}
    assert read_entry(record) == entry
    counts = PlanCounts()
    counts.add(entry)
    assert summary_record(counts)["exit_code"] == EXIT_CHANGES_PENDING


def test_the_documented_plan_of_the_example_migration_is_what_the_planner_renders() -> None:
    """docs/selectors-plan-rollback.md quotes this plan of jobs/migrate-mail-servers.jsonl (default world)."""
    world = generate_world(tenants=3, connectors_per_tenant=20, seed=1)
    aliases = tuple(t.alias for t in world.tenants.values())
    raw = (Path(__file__).parent.parent / "jobs" / "migrate-mail-servers.jsonl").read_bytes()
    parsed = [
        parse_selector(orjson.loads(t), line=n, file="j", tenants=aliases) for n, t in enumerate(raw.splitlines(), 1)
    ]
    selectors = [s for s in parsed if isinstance(s, Selector)]
    planner, entries = Planner(), []
    for tenant in world.tenants.values():
        expander = Expander(tenant.alias, [s for s in selectors if tenant.alias in s.tenants])
        expander.add_page(tenant.connectors.values())
        for selector in selectors:
            for match in expander.matches(selector):
                current = tenant.connectors[match.object_id.lower()]
                entries.append(planner.plan(operation_for(selector, match), CONNECTORS, current, selected=True))
    lines = list(render_text(entries, counts := PlanCounts()))
    doc = (Path(__file__).parent.parent / "docs" / "selectors-plan-rollback.md").read_text()
    assert "\n".join(lines[:4]) in doc
    assert lines[-1] == "Plan: 36 to change, 0 actions to send, 0 unchanged, 0 not found, 0 errors."
    assert lines[-1] in doc
    assert counts.exit_code() == EXIT_CHANGES_PENDING


def test_an_undo_line_shows_its_own_key_and_a_selector_match_its_lines_key() -> None:
    """An undo line's key undo:TENANT:ID is shown whole; a selector match (LINEKEY:TENANT:ID) shows the line's key."""
    planner = Planner()
    undo = Operation("undo:contoso:A", 1, "contoso", "exchangeConnector", "A", Action.UPDATE, {"serverName": "old"},
                     expect={"serverName": "new"})  # fmt: skip
    matched = _op("to-exo:contoso:B", "B", {"serverName": "new"})
    entries = [
        planner.plan(undo, CONNECTORS, _current("new")),
        planner.plan(matched, CONNECTORS, _current("old"), selected=True),
    ]
    lines = list(render_text(entries, PlanCounts()))
    assert lines[1] == "  A (line 1, key undo:contoso:A):"
    assert lines[3] == "  B (line 1, key to-exo):"
