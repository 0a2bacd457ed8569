"""Invalid lines that name no configured tenant ('contosso', '*', none) are shown apart, never as tenants."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import orjson
import pytest

from bulkconn.model import NO_TENANT, Outcome, Status
from bulkconn.report import format as fmt
from bulkconn.report.handover import load_handover
from bulkconn.report.reader import summarize
from bulkconn.report.show import render
from bulkconn.report.writer import ReportWriter
from tests.conftest import World

ID = "cccccccc-0000-4000-8000-000000000001"
NAMED = ["contosso", "*", ""]  # a typo, a selector tenant on an id line, no tenant at all


def _report(tmp: Path) -> Path:
    report = tmp / "job.report.jsonl"
    with ReportWriter(report) as writer:
        writer.write(fmt.header(
            run_id="r", job=str(tmp / "gone.jsonl"), job_sha256="0" * 64, job_bytes=0, job_lines=0,
            bulkconn_version="0", started_at="2026-05-04T09:30:00.000Z", resumed=False,
            tenants=["contoso", "fabrikam"], settings={},
        ))  # fmt: skip
        writer.result(
            Outcome("1", 1, "contoso", ID, "update", Status.SUCCEEDED, 200, finished_at="2026-05-04T09:30:01Z")
        )
        writer.result(Outcome.invalid(key="2", line=2, tenant="contoso", object_id=ID, action="update", message="bad"))
        for line, tenant in enumerate(NAMED, start=3):
            message = f"unknown tenant alias '{tenant}'"
            writer.result(
                Outcome.invalid(key=str(line), line=line, tenant=tenant, object_id=ID, action="", message=message)
            )
        writer.write(fmt.summary(counts={}, interrupted=False, skipped_from_earlier_runs=0, auth_failures={},
                                 duration_s=1.0, finished_at="2026-05-04T09:30:02.000Z"))  # fmt: skip
    return report


def test_the_handover_lists_configured_tenants_and_puts_lines_of_no_tenant_apart(tmp_path: Path) -> None:
    """2 tenants (as configured); the 3 lines of no configured tenant in their own section; every line counted."""
    handover = load_handover(_report(tmp_path))
    assert [t.alias for t in handover.tenants] == ["contoso", "fabrikam"]
    assert [(r.line, r.tenant) for r in handover.unassigned] == [(3, "contosso"), (4, "*"), (5, "")]
    assert handover.outcome() == "5 operations: 1 succeeded, 4 invalid"
    assert dict(handover.tenants[0].counts) == {"succeeded": 1, "invalid": 1}  # its own invalid line stays with it
    markdown = render(handover, "md")
    assert re.findall(r"^## .*$", markdown, flags=re.M) == [
        "## Tenant contoso",
        "## Tenant fabrikam",
        "## Job lines for no configured tenant",
    ]
    section = markdown.split("## Job lines for no configured tenant", 1)[1]
    assert "unknown tenant alias 'contosso'" in section and "| 5 | (none) |" in section
    page = render(handover, "html")
    assert "2 tenants" in page
    assert re.findall(r"<h2>([^<]*)</h2>", page) == [
        "Run",
        "Tenants",
        "contoso",
        "fabrikam",
        "Job lines for no configured tenant",
    ]
    rows = list(csv.DictReader(io.StringIO(render(handover, "csv"))))
    assert [r["tenant"] for r in rows] == ["contoso", "contoso", "contosso", "*", ""]


def test_report_summary_counts_lines_of_no_tenant_in_one_row(tmp_path: Path) -> None:
    """`report summary`: the configured tenants, then one row for the lines that named none of them."""
    assert summarize(_report(tmp_path))["by_tenant"] == {
        NO_TENANT: {"invalid": 3},
        "contoso": {"invalid": 1, "succeeded": 1},
    }


@pytest.mark.e2e
def test_the_run_summary_table_has_a_row_per_configured_tenant_only(world: World) -> None:
    """A run with lines naming 'contosso', '*' and no tenant: the table and --json group them in one row."""
    bad = [{"tenant": tenant, "id": ID, "patch": {"serverName": "x.example.com"}} for tenant in NAMED]
    bad.append({"id": ID, "patch": {"serverName": "x.example.com"}})
    job = world.dir / "bad.jsonl"
    job.write_bytes(world.job.read_bytes() + b"".join(orjson.dumps(line) + b"\n" for line in bad))
    proc = world.bulkconn("run", "bad.jsonl", "--config", "bulkconn.toml", "-q", "--json")
    assert proc.returncode == 1, proc.stderr
    rows = [line.strip("│ ").split("│")[0].strip() for line in proc.stderr.splitlines() if line.startswith("│")]
    assert rows == ["contoso", "fabrikam", NO_TENANT, "total"]
    assert orjson.loads(proc.stdout)["per_tenant"][NO_TENANT] == {"invalid": 4}
