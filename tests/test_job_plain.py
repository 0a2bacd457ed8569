"""The scan's fast path for plain PATCH lines decides exactly what the full check decides, and keeps nothing per line."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.jobline import Invalid, LineParser
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.model import Operation

TENANTS = ["contoso", "fabrikam"]
GOOD = {"serverName": "mail.contoso.com", "exchangeConnectorType": "serviceToService"}

# Lines that look plain (only tenant, id, patch, resource) and are valid or not in every way the fast path must notice.
LINES: list[Any] = [
    {"tenant": "contoso", "id": "c1", "patch": GOOD},
    {"id": "c2", "patch": GOOD},  # the defaults' tenant
    {"tenant": "fabrikam", "id": "c3", "patch": {"exchangeConnectorType": "onPremises"}},
    {"tenant": "contoso", "id": "c4", "patch": {"exchangeConnectorType": "onPremise"}},  # not a member
    {"tenant": "contoso", "id": "c5", "patch": {"serverName": 7}},
    {"tenant": "contoso", "id": "c6", "patch": {"serverName": None}},  # null: nullable, decided by the full path
    {"tenant": "contoso", "id": "c7", "patch": {"exchangeConnectorType": None}},
    {"tenant": "contoso", "id": "c8", "patch": {"servername": "x"}},  # did you mean
    {"tenant": "contoso", "id": "c9", "patch": {"id": "c9"}},  # the key
    {"tenant": "contoso", "id": "c10", "patch": {"lastSyncDateTime": "2026-01-01T00:00:00Z"}},
    {"tenant": "contoso", "id": "c11", "patch": {"lastSyncDateTime": "yesterday"}},
    {"tenant": "contoso", "id": "c12", "patch": {"@odata.type": "#microsoft.graph.deviceManagementExchangeConnector"}},
    {"tenant": "contoso", "id": "c13", "patch": {}},
    {"tenant": "contoso", "id": "c14", "patch": ["serverName"]},
    {"tenant": "nowhere", "id": "c15", "patch": GOOD},
    {"tenant": "", "id": "c16", "patch": GOOD},
    {"tenant": 3, "id": "c17", "patch": GOOD},
    {"tenant": "contoso", "id": "", "patch": GOOD},
    {"tenant": "contoso", "id": "bad id!", "patch": GOOD},
    {"tenant": "contoso", "id": 12, "patch": GOOD},
    {"tenant": "contoso", "patch": GOOD},
    {"tenant": "contoso", "id": "d1", "resource": "deviceCategories", "patch": {"displayName": "Kiosks"}},
    {"tenant": "contoso", "id": "d2", "resource": "deviceCategories", "patch": {"displayName": "Kiosks"}},
    {"tenant": "contoso", "id": "d3", "resource": "deviceCategories", "patch": {"displayname": "Kiosks"}},
    {"tenant": "contoso", "id": "d4", "resource": "deviceCategories", "patch": {"displayName": ["Kiosks"]}},
    {"tenant": "contoso", "id": "d5", "resource": "deviceCategorys", "patch": {"displayName": "Kiosks"}},
    {"tenant": "contoso", "id": "d6", "resource": ["deviceCategories"], "patch": {"displayName": "Kiosks"}},
    {"tenant": "contoso", "id": "m1", "resource": "managedDevices", "patch": {"managedDeviceOwnerType": "company"}},
    {"tenant": "contoso", "id": "m2", "resource": "managedDevices", "patch": {"managedDeviceOwnerType": "company"}},
    {"tenant": "contoso", "id": "m3", "resource": "managedDevices", "patch": {"managedDeviceOwnerType": "Company"}},
    {"tenant": "contoso", "id": "m4", "resource": "managedDevices", "patch": {"requireUserEnrollmentApproval": True}},
    {"tenant": "contoso", "id": "m5", "resource": "managedDevices", "patch": {"requireUserEnrollmentApproval": 1}},
    {"tenant": "contoso", "id": "p1", "resource": "deviceManagementPartners", "patch": {"isConfigured": False}},
    {"tenant": "contoso", "id": "p2", "resource": "deviceManagementPartners", "patch": {"isConfigured": "no"}},
    {"tenant": "contoso", "id": "x1", "resource": "deviceConfigurations", "patch": {"displayName": "abstract"}},
    {"tenant": "contoso", "id": "x2", "resource": "windowsAutopilotDeviceIdentities", "patch": {"groupTag": "t"}},
    {"tenant": "contoso", "id": "c18", "patch": GOOD, "key": "named"},
    {"tenant": "contoso", "id": "c19", "patch": GOOD, "key": "named"},  # duplicate key
    {"tenant": "contoso", "id": "c20", "patch": GOOD, "expect": GOOD},
    {"tenant": "contoso", "id": "c21", "action": "sync", "syncType": "fullSync"},
    {"tenant": "contoso", "id": "c22", "patch": GOOD, "params": {}},
    {"tenant": "contoso", "id": "c23", "patch": GOOD, "extra": 1},
    "not an object",
    {"tenant": "contoso", "id": "c24", "patch": GOOD},
]

DEFAULTS: list[dict[str, Any]] = [
    {"tenant": "contoso"},
    {"tenant": "contoso", "patch": {"exchangeConnectorType": "hosted"}},
    {"tenant": "contoso", "@odata.type": "#microsoft.graph.deviceManagementExchangeConnector"},
    {"tenant": "contoso", "action": "sync"},
    {"tenant": "contoso", "resource": "deviceCategories"},
]


def _write(path: Path, defaults: dict[str, Any]) -> Path:
    lines = [{"defaults": defaults}, *LINES]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines) + b"{broken\n")
    return path


def _scan(path: Path) -> tuple[JobScan, list[Invalid]]:
    invalid: list[Invalid] = []
    return scan_job(path, TENANTS, on_invalid=invalid.append), invalid


@pytest.mark.parametrize("defaults", DEFAULTS, ids=lambda d: ",".join(sorted(d)))
def test_fast_path_decides_as_the_full_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defaults: dict[str, Any]
) -> None:
    """Counts, offsets, actions and every problem (messages included) are those of the full check alone."""
    job = _write(tmp_path / "job.jsonl", defaults)
    fast, fast_invalid = _scan(job)
    monkeypatch.setattr(LineParser, "plain_tenant", lambda self, data: None)
    full, full_invalid = _scan(job)
    assert fast_invalid == full_invalid
    assert fast_invalid  # the corpus holds invalid lines under every defaults line
    for name in ("valid", "invalid", "lines", "tenant_operations", "actions", "offsets", "line_numbers"):
        assert getattr(fast, name) == getattr(full, name), name


def test_lane_reader_reads_the_same_operations_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane re-reading lines builds the operation the full check builds (key, tenant, resource, patch...)."""
    job = _write(tmp_path / "job.jsonl", {"tenant": "contoso"})
    scan, _ = _scan(job)
    fast = _read_all(scan)
    monkeypatch.setattr(LineParser, "plain_tenant", lambda self, data: None)
    assert fast == _read_all(scan)
    assert sum(len(ops) for ops in fast.values()) == scan.valid


def _read_all(scan: JobScan) -> dict[str, list[Operation]]:
    found = {}
    for tenant in scan.offsets:
        with closing(LaneReader(scan, tenant)) as lane:
            found[tenant] = lane.read(1000)
    return found


def test_fast_path_is_taken_for_plain_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid plain PATCH after the first of its resource is counted without the full check or an Operation."""
    job = _write(tmp_path / "job.jsonl", {"tenant": "contoso"})
    full: list[int] = []
    parse = LineParser.parse

    def counted(self: LineParser, data: Any, line: int) -> Operation | Invalid:
        full.append(line)
        return parse(self, data, line)

    monkeypatch.setattr(LineParser, "parse", counted)
    _scan(job)
    checked_in_full = set(full)
    # The defaults are line 1, LINES[i] is line i + 2: c2, c3, d2, m2, m4 (a boolean) and c24 are plain, valid, and
    # not the first line of their resource; every other line (a problem, a key, a selector...) is checked in full.
    assert set(range(2, len(LINES) + 2)) - checked_in_full == {3, 4, 24, 30, 32, 45}


def test_plain_checks_are_per_resource_and_bounded(tmp_path: Path) -> None:
    """What the fast path keeps grows with the resources a job names (at most the registry's), not its lines."""
    job = tmp_path / "job.jsonl"
    lines = [{"tenant": "contoso", "id": f"c{n}", "patch": {f"p{n}": "x", "serverName": f"s{n}"}} for n in range(500)]
    job.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    parser = LineParser({}, TENANTS)
    for number, line in enumerate(lines, start=1):
        parser.parse(line, number)
    assert list(parser._plain) == ["exchangeConnector"]
