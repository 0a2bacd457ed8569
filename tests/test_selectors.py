"""Selector lines: validation with file/line/property, $select, matching, expansion and its durable record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator.state import generate_world
from bulkconn.expansion import Expander, Match, done_record, match_record, operation_for, read_expansion
from bulkconn.model import Action
from bulkconn.selectors import Selector, SelectorProblem, listing_path, parse_selector, select_fields

TENANTS = ("contoso", "fabrikam", "northwind")
W10 = "#microsoft.graph.windows10GeneralConfiguration"


def _parse(data: dict[str, Any], line: int = 4, **kwargs: Any) -> Selector | SelectorProblem:
    return parse_selector(data, line=line, file="jobs/m.jsonl", tenants=kwargs.pop("tenants", TENANTS), **kwargs)


def _ok(data: dict[str, Any], line: int = 4, **kwargs: Any) -> Selector:
    parsed = _parse(data, line, **kwargs)
    assert isinstance(parsed, Selector), parsed
    return parsed


def _problem(data: dict[str, Any], **kwargs: Any) -> SelectorProblem:
    parsed = _parse(data, **kwargs)
    assert isinstance(parsed, SelectorProblem), parsed
    return parsed


def _connector(object_id: str, server: str, kind: str = "onPremises") -> dict[str, Any]:
    return {"id": object_id, "serverName": server, "exchangeConnectorType": kind}


def test_star_selects_every_configured_tenant_and_the_patch_merges_over_defaults() -> None:
    """'*' resolves to every tenant in configuration order; the defaults' patch is merged under the line's."""
    selector = _ok(
        {"tenant": "*", "where": {"serverName": "old.contoso.com"}, "patch": {"serverName": "new.contoso.com"}},
        defaults={"patch": {"exchangeAlias": "intune"}},
    )
    assert selector.tenants == TENANTS
    assert dict(selector.patch) == {"exchangeAlias": "intune", "serverName": "new.contoso.com"}
    assert selector.key == "4"


@pytest.mark.parametrize(
    ("data", "prop", "words"),
    [
        ({"where": {"serverNme": "x"}, "patch": {"version": "1"}}, "serverNme", "did you mean 'serverName'"),
        ({"where": {"status": "conected"}, "patch": {"version": "1"}}, "status", "did you mean 'connected'"),
        ({"where": {"serverName": 5}, "patch": {"version": "1"}}, "serverName", "must be text"),
        ({"select": "all", "patch": {"serverNme": "x"}}, "serverNme", "did you mean 'serverName'"),
        ({"tenant": "contosso", "select": "all", "patch": {"version": "1"}}, "tenant", "did you mean 'contoso'"),
        ({"select": "some", "patch": {"version": "1"}}, "select", 'only be "all"'),
        ({"select": "all", "where": {"version": "1"}, "patch": {"version": "1"}}, "select", "not both"),
        ({"where": {}, "patch": {"version": "1"}}, "where", "property: value pairs"),
        ({"where": {"version": "1"}, "id": "abc", "patch": {"version": "1"}}, "id", "names no 'id'"),
        ({"select": "all", "patch": {}}, "patch", "empty patch"),
        ({"select": "all", "action": "sync", "syncType": "halfSync"}, "syncType", "halfSync"),
        ({"select": "all", "resource": "exchangeConectors", "patch": {"version": "1"}}, "resource", "did you mean"),
    ],
)
def test_bad_selector_lines_name_file_line_and_property(data: dict[str, Any], prop: str, words: str) -> None:
    """Every mistake is refused before anything is sent, naming where it is and suggesting the near name."""
    problem = _problem({"tenant": "contoso", **data})
    assert problem.prop == prop
    assert words in problem.reason
    assert problem.located().startswith("jobs/m.jsonl:4: ")
    assert problem.message.startswith("line 4: ")


def test_a_selector_with_one_configured_tenant_needs_no_tenant_field() -> None:
    """Like any job line, a lone configured tenant is the default."""
    assert _ok({"select": "all", "patch": {"version": "1"}}, tenants=("solo",)).tenants == ("solo",)
    assert _problem({"select": "all", "patch": {"version": "1"}}).prop == "tenant"


def test_select_fields_cover_where_and_patched_properties_only_when_asked() -> None:
    """A listing asks for id and the where properties; plan/backup also need the patched ones."""
    a = _ok({"where": {"serverName": "x"}, "patch": {"exchangeAlias": "y"}, "tenant": "contoso"})
    b = _ok({"where": {"status": "connected"}, "patch": {"version": "2"}, "tenant": "contoso"})
    assert select_fields([a, b], with_patched=False) == ("id", "serverName", "status")
    assert select_fields([a, b], with_patched=True) == ("id", "exchangeAlias", "serverName", "status", "version")
    assert listing_path(a.collection, ("id", "serverName")) == (
        "/deviceManagement/exchangeConnectors?$select=id,serverName"
    )


def test_where_on_a_derived_type_validates_and_matches_that_type() -> None:
    """In an abstract collection, where @odata.type picks the kind; its properties and the patch validate against it."""
    selector = _ok(
        {
            "tenant": "contoso",
            "resource": "deviceConfigurations",
            "where": {"@odata.type": W10, "cameraBlocked": False},
            "patch": {"cameraBlocked": True},
        }
    )
    assert selector.matches({"@odata.type": W10, "id": "1", "cameraBlocked": False})
    assert not selector.matches({"@odata.type": "#microsoft.graph.iosGeneralDeviceConfiguration", "id": "2"})
    assert select_fields([selector], with_patched=False) == ()  # Graph cannot $select a derived type's property
    assert listing_path(selector.collection, ()) == "/deviceManagement/deviceConfigurations"
    bad = _problem(
        {
            "tenant": "contoso",
            "resource": "deviceConfigurations",
            "where": {"@odata.type": "#microsoft.graph.windows10General"},
            "patch": {"cameraBlocked": True},
        }
    )
    assert "did you mean '#microsoft.graph.windows10GeneralConfiguration'" in bad.reason


def test_expansion_matches_across_pages_dedups_within_a_line_and_keeps_line_order() -> None:
    """Two lines matching one object give two operations in line order; a page repeat gives one."""
    rename = _ok({"tenant": "*", "where": {"serverName": "old.contoso.com"}, "patch": {"serverName": "new"}}, line=3)
    move = _ok(
        {
            "tenant": "*",
            "key": "s2s",
            "where": {"exchangeConnectorType": "onPremises"},
            "patch": {"exchangeConnectorType": "serviceToService"},
        },
        line=7,
    )
    expander = Expander("contoso", [move, rename])
    expander.add_page([_connector("A", "old.contoso.com"), _connector("B", "other", "hosted")])
    expander.add_page([_connector("C", "other"), _connector("a", "old.contoso.com")])  # "a": A listed again
    assert [m.key for m in expander.matches(rename)] == ["3:contoso:A"]
    assert [m.key for m in expander.matches(move)] == ["s2s:contoso:A", "s2s:contoso:C"]
    op = operation_for(move, expander.matches(move)[1])
    assert (op.key, op.line, op.tenant, op.object_id, op.action, op.patch) == (
        "s2s:contoso:C",
        7,
        "contoso",
        "C",
        Action.UPDATE,
        {"exchangeConnectorType": "serviceToService"},
    )
    records = expander.records()
    assert [r["type"] for r in records] == ["expansion", "expansion_done", "expansion", "expansion", "expansion_done"]
    assert records[1] == {"type": "expansion_done", "line": 3, "tenant": "contoso", "count": 1, "listed": 4}


def test_recorded_expansion_is_what_a_resume_uses_and_a_torn_group_is_listed_again() -> None:
    """Complete groups come back exactly; a group cut off by a crash is dropped at the next header and relisted."""
    a, f = Match(3, "contoso", "3:contoso:A", "A"), Match(3, "fabrikam", "3:fabrikam:F", "F")
    g = Match(3, "fabrikam", "3:fabrikam:G", "G")
    records = [
        {"type": "header", "format": 1},
        match_record(a),
        done_record(3, "contoso", 1, 10),
        match_record(f),  # the crash came here
        {"type": "header", "format": 1, "resumed": True},
        match_record(Match(3, "contoso", "3:contoso:Z", "Z")),  # never overrides a complete group
        done_record(3, "contoso", 1, 10),
        match_record(g),  # fabrikam listed again after the resume: the tenant changed meanwhile
        done_record(3, "fabrikam", 1, 10),
        done_record(5, "contoso", 0, 10),
        match_record(Match(5, "northwind", "5:northwind:N", "N")),  # cut off again
    ]
    recorded = read_expansion(records)
    assert recorded.matches(3, "contoso") == (a,)
    assert recorded.matches(3, "fabrikam") == (g,)
    assert recorded.matches(5, "contoso") == ()
    assert recorded.matches(5, "northwind") is None
    assert recorded.incomplete == {(5, "northwind")}


def test_the_example_migration_expands_to_exactly_the_matching_connectors_of_the_default_world() -> None:
    """jobs/migrate-mail-servers.jsonl over `emulator serve`'s default tenants, listed in pages of 7."""
    world = generate_world(tenants=3, connectors_per_tenant=20, seed=1)
    aliases = tuple(t.alias for t in world.tenants.values())
    raw = (Path(__file__).parent.parent / "jobs" / "migrate-mail-servers.jsonl").read_bytes()
    selectors = [_ok(orjson.loads(text), line=n, tenants=aliases) for n, text in enumerate(raw.splitlines(), 1)]
    for tenant in world.tenants.values():
        listing = list(tenant.connectors.values())
        expander = Expander(tenant.alias, [s for s in selectors if tenant.alias in s.tenants])
        for start in range(0, len(listing), 7):
            expander.add_page(listing[start : start + 7])
        for selector in selectors:
            found = [m.object_id for m in expander.matches(selector)]
            wanted = [
                c["id"]
                for c in listing
                if tenant.alias in selector.tenants and all(c[k] == v for k, v in selector.where.items())
            ]
            assert found == wanted, (tenant.alias, selector.key)
    assert [len(s.tenants) for s in selectors] == [3, 1, 1]


def test_a_sync_selector_expands_into_sync_operations() -> None:
    """A selector can send an action to every match: each expanded operation is a sync with the line's type."""
    selector = _ok(
        {"tenant": "fabrikam", "where": {"status": "disconnected"}, "action": "sync", "syncType": "deltaSync"}
    )
    expander = Expander("fabrikam", [selector])
    expander.add_page([{"id": "A", "status": "disconnected"}, {"id": "B", "status": "connected"}])
    ops = [operation_for(selector, m) for m in expander.matches(selector)]
    assert [(o.object_id, o.action, o.sync_type, o.patch) for o in ops] == [("A", Action.SYNC, "deltaSync", {})]
