"""`bulkconn export --format csv`: an Excel-ready CSV job that reads back as exactly the JSON Lines export's operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.cli.undo import export_format
from bulkconn.csvout import BOM, CsvExportError, CsvJobWriter
from bulkconn.emulator.state import generate_world
from bulkconn.errors import UsageError
from bulkconn.jobline import Invalid
from bulkconn.jobscan import scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.registry import Resource
from bulkconn.rollback import export_line, writable_properties
from bulkconn.targets import resolve_resource
from tests.conftest import World

CONNECTORS = resolve_resource("exchangeConnectors")
POLICIES = resolve_resource("deviceCompliancePolicies")
WINDOWS, IOS = "#microsoft.graph.windows10CompliancePolicy", "#microsoft.graph.iosCompliancePolicy"
# Texts a careless writer would change: newlines, quotes, the null spelling, spaces, formula starts, delimiters.
HARD_TEXTS = [
    "a\nb",
    "a\r\nb",
    "c\rr",
    'q"uote',
    "#null",
    "##null",
    " spaced ",
    "=1+2",
    "-x",
    "@x",
    "+1",
    "é;,\t",
    "'x",
]
Op = tuple[str, str, str, str, dict[str, Any], str]


def _id(number: int) -> str:
    return f"d5f4b3b2-e4b0-4ce6-8741-{number:012d}"


def _connectors() -> list[dict[str, Any]]:
    return [
        {"id": _id(i), "serverName": text, "exchangeAlias": None, "status": "connected", "version": "1"}
        for i, text in enumerate(HARD_TEXTS)
    ]


def _policies() -> list[dict[str, Any]]:
    windows = {"@odata.type": WINDOWS, "id": _id(100), "displayName": "W", "description": None, "version": 3}
    windows |= {"passwordRequired": True, "passwordMinimumLength": 8, "osMinimumVersion": "10.0"}
    ios = {"@odata.type": IOS, "id": _id(101), "displayName": "I", "passcodeRequired": False}
    ios |= {"passcodeMinimumLength": 6, "restrictedApps": [{"name": 'x, "y"', "appId": "#null"}]}
    return [windows, ios]


def _lines(objects: list[dict[str, Any]], collection: Resource, job_resource: str | None) -> list[dict[str, Any]]:
    return [export_line(o, tenant="contoso", collection=collection, job_resource=job_resource) for o in objects]


def _write_csv(path: Path, lines: list[dict[str, Any]], collection: Resource) -> Path:
    with CsvJobWriter(leading=writable_properties(collection.entity_type)) as table, path.open("wb") as sink:
        for line in lines:
            table.add(line)
        table.write(sink)
    return path


def _operations(path: Path) -> list[Op]:
    """Every operation scan_job reads from ``path``, without its line number and key (a CSV has a header line)."""
    invalid: list[Invalid] = []
    scan = scan_job(path, ["contoso", "fabrikam"], on_invalid=invalid.append)
    assert invalid == []
    ops = []
    for tenant in scan.offsets:
        reader = LaneReader(scan, tenant)
        ops += reader.read(1000)
        reader.close()
    return [(o.tenant, o.object_id, o.resource, o.action, o.patch, o.odata_type) for o in ops]


@pytest.mark.parametrize(
    ("objects", "collection", "job_resource"),
    [(_connectors(), CONNECTORS, None), (_policies(), POLICIES, "deviceCompliancePolicies")],
    ids=["connectors-hard-texts", "compliance-policies-two-types"],
)
def test_csv_and_jsonl_exports_of_the_same_objects_yield_identical_operations(
    tmp_path: Path, objects: list[dict[str, Any]], collection: Resource, job_resource: str | None
) -> None:
    """Texts with newlines, quotes, '#null', formula starts, nulls, booleans, numbers, lists and two concrete types
    read back from the CSV exactly as from the JSON Lines export (no formula prefix: it would change the value)."""
    lines = _lines(objects, collection, job_resource)
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    from_csv = _operations(_write_csv(tmp_path / "e.csv", lines, collection))
    assert from_csv == _operations(jsonl) and len(from_csv) == len(objects)


def test_the_csv_is_what_excel_opens_with_stable_columns(tmp_path: Path) -> None:
    """UTF-8 with a BOM, CRLF rows, row fields first and properties in metadata order, whatever the objects' order."""
    lines = _lines(_policies(), POLICIES, "deviceCompliancePolicies")
    one = _write_csv(tmp_path / "one.csv", lines, POLICIES).read_bytes()
    other = _write_csv(tmp_path / "other.csv", lines[::-1], POLICIES).read_bytes()
    assert one.startswith(BOM.encode()) and one.count(b"\r\n") == 3 and one.count(b"\n") == 3
    header = one[len(BOM.encode()) :].split(b"\r\n")[0].decode().split(",")
    assert header[:4] == ["tenant", "id", "resource", "@odata.type"]
    assert header[4:6] == ["description", "displayName"]  # deviceCompliancePolicy's own, before the subtypes'
    assert header == other[len(BOM.encode()) :].split(b"\r\n")[0].decode().split(",")


def test_an_empty_text_is_refused_naming_the_object_and_property() -> None:
    """An empty text (an empty cell means 'not set') is refused with tenant, object and property, never written."""
    line = export_line({"id": _id(1), "serverName": ""}, tenant="contoso", collection=CONNECTORS)
    with CsvJobWriter(leading=()) as table, pytest.raises(CsvExportError) as caught:
        table.add(line)
    assert str(caught.value) == (
        f"tenant contoso, object {_id(1)}: 'serverName' is an empty text, which CSV cannot hold (an empty cell "
        "means 'not set'); export it with --format jsonl instead"
    )


def test_a_value_of_the_wrong_type_is_refused_rather_than_retyped() -> None:
    """A number held as text in a numeric property would read back as a number: refused with its name."""
    line = export_line(
        {"@odata.type": WINDOWS, "id": _id(2), "passwordMinimumLength": "8"},
        tenant="contoso",
        collection=POLICIES,
        job_resource="deviceCompliancePolicies",
    )
    with CsvJobWriter(leading=()) as table, pytest.raises(CsvExportError, match=r"'passwordMinimumLength' holds \"8\""):
        table.add(line)


def test_the_documented_csv_export_is_what_export_writes_for_the_default_world(tmp_path: Path) -> None:
    """docs/selectors-plan-rollback.md shows the CSV export of the first contoso connector of `emulator serve`."""
    world = generate_world(tenants=3, connectors_per_tenant=20, seed=1)
    contoso = next(t for t in world.tenants.values() if t.alias == "contoso")
    first = contoso.connectors["d5f4b3b2-e4b0-4ce6-8741-c7a87ce42c82"]
    line = export_line(first, tenant="contoso", collection=CONNECTORS)
    written = _write_csv(tmp_path / "e.csv", [line], CONNECTORS).read_bytes().decode("utf-8-sig")
    doc = (Path(__file__).parent.parent / "docs" / "selectors-plan-rollback.md").read_text()
    assert "```csv\n" + written.replace("\r\n", "\n") + "```" in doc


@pytest.mark.parametrize(
    ("out", "given", "expected"),
    [
        ("e.csv", None, "csv"),
        ("E.CSV", None, "csv"),
        ("e.jsonl", None, "jsonl"),
        ("e.txt", None, "jsonl"),
        ("-", None, "jsonl"),
        ("-", "csv", "csv"),
        ("e.csv", "csv", "csv"),
        ("e.jsonl", "jsonl", "jsonl"),
        ("e.jsonl", "csv", "reads a CSV job only from a file named"),
        ("e.csv", "jsonl", "would be read back as a CSV job"),
    ],
)
def test_the_format_follows_the_file_name_unless_given(out: str, given: str | None, expected: str) -> None:
    """.csv -> csv, anything else and stdout -> jsonl; --format that bulkconn would misread from that name: refused."""
    if expected in ("csv", "jsonl"):
        assert export_format(Path(out), given) == expected
    else:
        with pytest.raises(UsageError, match=expected):
            export_format(Path(out), given)


@pytest.mark.e2e
def test_a_csv_export_runs_as_a_job_that_changes_nothing(world: World) -> None:
    """export -o e.csv against the emulator: plan says nothing to change, and it reads as the JSON Lines export."""
    for name in ("e.csv", "e.jsonl"):
        done = world.bulkconn("export", "--config", "bulkconn.toml", "-o", name)
        assert done.returncode == 0, done.stderr
    assert (world.dir / "e.csv").read_bytes().startswith(BOM.encode() + b"tenant,id,")
    assert _operations(world.dir / "e.csv") == _operations(world.dir / "e.jsonl")
    assert len(_operations(world.dir / "e.csv")) == 40
    plan = world.bulkconn("plan", "e.csv", "--config", "bulkconn.toml")
    assert plan.returncode == 0 and "Plan: 0 to change, 0 actions to send, 40 unchanged" in plan.stdout, plan.stderr
    stdout = world.bulkconn("export", "--config", "bulkconn.toml", "--tenant", "contoso", "-o", "-", "--format", "csv")
    assert stdout.returncode == 0 and stdout.stdout.startswith(BOM + "tenant,id,")
    assert world.emu.stats()["writes_total"] == 0
