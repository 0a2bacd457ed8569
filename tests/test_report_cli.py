"""`report summary` and `report failed` on real reports and on files that are not reports."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkconn.model import Action, Operation
from bulkconn.report import format as fmt
from bulkconn.report.reader import summarize
from bulkconn.report.writer import ReportWriter
from tests.conftest import World

REPORT = "job.report.jsonl"


def _header(job: Path) -> fmt.HeaderRecord:
    return fmt.header(
        run_id="r",
        job=str(job),
        job_sha256="0" * 64,
        job_bytes=0,
        job_lines=0,
        bulkconn_version="0",
        started_at="2026-01-01T00:00:00.000Z",
        resumed=False,
        tenants=["contoso", "fabrikam"],
        settings={},
    )


def test_summary_counts_syncs_whose_latest_line_is_an_intent(tmp_path: Path) -> None:
    """A sync cut off in flight (intent, no result) counts as one uncertain operation of its tenant."""
    report = tmp_path / "r.jsonl"
    with ReportWriter(report) as writer:
        writer.write(_header(tmp_path / "job.jsonl"))
        for n, tenant in ((1, "contoso"), (2, "contoso"), (3, "fabrikam")):
            writer.intent(
                Operation(str(n), n, tenant, "exchangeConnector", f"id{n}", Action.SYNC, sync_type="fullSync")
            )
    data = summarize(report)
    assert data["operations"] == 3
    assert data["by_status"] == {"uncertain": 3}
    assert data["by_tenant"] == {"contoso": {"uncertain": 2}, "fabrikam": {"uncertain": 1}}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("job.jsonl", b'{"tenant": "contoso", "id": "x", "patch": {"serverName": "a"}}\n'),
        ("bulkconn.toml", b'[tenants.contoso]\ntenant_id = "x"\n'),
        ("garbage.bin", bytes(range(256)) * 4),
        ("empty.jsonl", b""),
        ("result-first.jsonl", b'{"type": "result", "key": "1", "status": "succeeded"}\n'),
    ],
)
def test_summary_and_failed_refuse_files_that_are_not_reports(world: World, name: str, content: bytes) -> None:
    """A job, a TOML file, binary data, an empty file: exit 2 with a clear message, never "0 operations"."""
    (world.dir / name).write_bytes(content)
    for args in (
        ["report", "summary", name],
        ["report", "summary", name, "--json"],
        ["report", "failed", name, "-o", "x.jsonl"],
    ):
        proc = world.bulkconn(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert ("is not a bulkconn report" in proc.stderr) or ("is empty" in proc.stderr), proc.stderr
        assert "Traceback" not in proc.stderr and "0 operation" not in proc.stdout
    assert not (world.dir / "x.jsonl").exists()


@pytest.fixture
def failed_world(world: World) -> World:
    """A report with failures: fabrikam's secret was wrong for the run."""
    secret = world.dir / "bulkconn.secrets" / "fabrikam.secret"
    good = secret.read_text()
    secret.write_text("wrong\n")
    assert world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q").returncode == 1
    secret.write_text(good)
    return world


def test_failed_refuses_to_overwrite_an_existing_file_unless_forced(failed_world: World) -> None:
    """`report failed -o EXISTING` changes nothing and exits 2; with --force it replaces the file."""
    other = failed_world.dir / "other.jsonl"
    other.write_bytes(b"precious\n")
    refused = failed_world.bulkconn("report", "failed", REPORT, "-o", "other.jsonl")
    assert refused.returncode == 2 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert other.read_bytes() == b"precious\n"
    assert [p.name for p in failed_world.dir.iterdir() if p.name.startswith(".other")] == []  # no temp file left
    forced = failed_world.bulkconn("report", "failed", REPORT, "-o", "other.jsonl", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert orjson.loads(forced.stdout)["operations"] == 20
    assert len(other.read_bytes().splitlines()) == 20


@pytest.mark.parametrize("target", ["job.jsonl", "./job.jsonl", REPORT])
def test_failed_never_overwrites_the_job_or_the_report_even_forced(failed_world: World, target: str) -> None:
    """The job of the report (which --resume needs unchanged) and the report itself are never replaced."""
    before = {p: (failed_world.dir / p).read_bytes() for p in ("job.jsonl", REPORT)}
    for extra in ([], ["--force"]):
        proc = failed_world.bulkconn("report", "failed", REPORT, "-o", target, *extra)
        assert proc.returncode == 2, proc.stderr
        assert "write the failed operations to another file" in proc.stderr
    assert {p: (failed_world.dir / p).read_bytes() for p in before} == before
    resumed = failed_world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume", "--retry-failed")
    assert resumed.returncode == 0, resumed.stderr
