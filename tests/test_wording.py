"""Small things a user reads: the least time of a run, and the report name of a CSV job as documented."""

from __future__ import annotations

from pathlib import Path

from bulkconn.cli.common import default_report
from bulkconn.cli.display import least_time

ROOT = Path(__file__).parent.parent


def test_the_least_time_is_in_minutes_or_seconds_never_zero_minutes() -> None:
    """20 writes at 90 a second is 'at least 0.2 s', not 'at least 0.0 min'; long runs stay in minutes."""
    assert least_time(3.5) == "at least 3.5 min"
    assert least_time(20 / 90 / 60) == "at least 0.2 s"
    assert least_time(20 / (100 * 0.9 / 20) / 60) == "at least 4.4 s"
    assert least_time(0.0) == "under 0.1 s"


def test_a_csv_jobs_report_name_is_the_documented_one() -> None:
    """`run jobs/rename-servers.csv` reports to jobs/rename-servers.csv.report.jsonl, as docs/job-format.md says."""
    assert default_report(Path("jobs/rename-servers.csv")) == Path("jobs/rename-servers.csv.report.jsonl")
    assert default_report(Path("jobs/rename-servers.jsonl")) == Path("jobs/rename-servers.report.jsonl")
    doc = (ROOT / "docs" / "job-format.md").read_text()
    assert "`bulkconn run jobs/rename-servers.csv` writes\n`jobs/rename-servers.csv.report.jsonl`" in doc
