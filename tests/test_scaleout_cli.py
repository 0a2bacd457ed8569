"""The shard commands a user types, where no service is needed: validate --shards, report merge/summary/failed
over several reports, and the refusals of run --shard/--processes/--resume that happen before anything is sent.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from bulkconn.cli import cli
from bulkconn.fingerprint import fingerprint
from bulkconn.model import Status
from tests.test_merge import Shard, complete_set, outcome, plan_for

CONFIG = """
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "BULKCONN_TEST_SECRET"

[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"

[tenants.fabrikam]
tenant_id = "00000000-0000-0000-0000-000000000002"

[tenants.northwind]
tenant_id = "00000000-0000-0000-0000-000000000003"
"""


def invoke(directory: Path, *args: str) -> Result:
    with contextlib.chdir(directory):
        return CliRunner().invoke(cli, list(args), env={"BULKCONN_TEST_SECRET": "x", "BULKCONN_SHARD": None})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bulkconn.toml").write_text(CONFIG)
    lines = [
        {"tenant": tenant, "id": f"conn-{tenant}-{n}", "patch": {"serverName": "mail.example.com"}}
        for tenant, count in (("contoso", 5), ("fabrikam", 3), ("northwind", 2))
        for n in range(count)
    ]
    (tmp_path / "job.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return tmp_path


def test_validate_shards_prints_tenants_and_operations_per_shard(workdir: Path) -> None:
    """`validate --shards 2`: contoso (5) alone on one shard, fabrikam and northwind (3 + 2) on the other."""
    result = invoke(workdir, "validate", "job.jsonl", "--shards", "2")
    assert result.exit_code == 0, result.output
    assert "shard 0/2: 5 operation(s), 1 tenant(s)\n    contoso\n" in result.stdout
    assert "shard 1/2: 5 operation(s), 2 tenant(s)\n    fabrikam, northwind\n" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "2/2"], "--shard: shard 2 is out of range; with 2 shard(s) use 0 to 1"),
        (["--shard", "1/2", "--shards", "3"], "--shard says 2 shard(s) but --shards says 3"),
        (["--shards", "3"], "--shards 3 needs this process's shard index"),
        (["--processes", "2", "--shard", "0/2"], "--processes starts every shard itself; it does not go with --shard"),
        (["--global-share", "1.5"], "--global-share"),
    ],
)
def test_shard_mistakes_are_refused_with_exit_2_before_anything_is_sent(
    workdir: Path, args: list[str], message: str
) -> None:
    """Each mistake gets one line naming the flag, exit 2, no report and no traceback."""
    result = invoke(workdir, "run", "job.jsonl", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in workdir.glob("*report*")] == []


def test_processes_refuse_to_start_over_existing_reports(workdir: Path) -> None:
    """A fresh --processes run does not append to a shard report left by an earlier one: resume it instead."""
    (workdir / "job.shard-1-of-2.report.jsonl").write_text('{"type": "header"}\n')
    result = invoke(workdir, "run", "job.jsonl", "--processes", "2")
    assert result.exit_code == 2
    assert "job.shard-1-of-2.report.jsonl: report already exists" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "0/2"], "holds shard 1/3 of this job: resume with --processes 3"),
        ([], "holds shard 1/3 of this job"),
    ],
)
def test_resume_with_no_report_refuses_when_another_split_of_the_job_exists(
    workdir: Path, args: list[str], message: str
) -> None:
    """--resume starts a missing report, but not over reports of another N: their tenants would run twice."""
    (workdir / "job.shard-1-of-3.report.jsonl").write_text('{"type": "header"}\n')
    result = invoke(workdir, "run", "job.jsonl", "--resume", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_shard_resumed_with_no_report_refuses_an_unsharded_report_of_the_job(workdir: Path) -> None:
    """JOB.report.jsonl of an unsharded run (not a merge) means the job ran whole: a shard must not start over it."""
    (workdir / "job.report.jsonl").write_text('{"type": "header", "job_sha256": "x"}\n')
    result = invoke(workdir, "run", "job.jsonl", "--resume", "--shard", "0/2")
    assert result.exit_code == 2
    assert "holds an unsharded run of this job: resume it without --shard" in result.stderr


def test_report_merge_combines_a_complete_set_and_refuses_a_missing_shard(tmp_path: Path) -> None:
    """`report merge`: one line per operation from every shard; a missing shard is named, nothing written."""
    shards = complete_set(tmp_path, plan_for(3))
    merged = invoke(tmp_path, "report", "merge", *(str(s.path) for s in shards), "-o", "all.jsonl", "--json")
    assert merged.exit_code == 0, merged.output
    body = orjson.loads(merged.stdout)
    assert (body["shards"], body["operations"], body["counts"]) == (3, 7, {"succeeded": 7})
    refused = invoke(tmp_path, "report", "merge", str(shards[0].path), str(shards[2].path), "-o", "part.jsonl")
    assert refused.exit_code == 2
    assert "missing shard(s) 1 of 3" in refused.stderr and not (tmp_path / "part.jsonl").exists()


def test_report_summary_and_failed_read_several_shard_reports_as_one(tmp_path: Path) -> None:
    """Summary counts over both shards; `failed` writes the failures of both, from the job both ran."""
    plan = plan_for(2)
    job = tmp_path / "job.jsonl"
    job.write_text(
        "".join(f'{{"tenant": "t", "id": "conn-{n}", "patch": {{"serverName": "x"}}}}\n' for n in range(1, 8))
    )
    sha = fingerprint(job).sha256
    reports = []
    for index in range(2):
        shard = Shard(tmp_path, index, plan, sha=sha)
        keys = {"contoso": ["1", "2", "3"], "fabrikam": ["4", "5"], "northwind": ["6", "7"]}
        items = [(k, t) for t in plan.tenants[index] for k in keys[t]]
        shard.run([outcome(k, t, Status.FAILED if k in ("2", "6") else Status.SUCCEEDED) for k, t in items])
        reports.append(str(shard.path))
    summary = invoke(tmp_path, "report", "summary", *reports, "--json")
    assert summary.exit_code == 0, summary.output
    data = orjson.loads(summary.stdout)
    assert data["operations"] == 7 and data["by_status"] == {"succeeded": 5, "failed": 2}
    assert data["runs"] == 2 and data["duration_s"] == 2.5  # side by side: the longest, not the sum
    failed = invoke(tmp_path, "report", "failed", *reports, "-o", "again.jsonl", "--job", str(job), "--json")
    assert failed.exit_code == 0, failed.output
    assert orjson.loads(failed.stdout)["operations"] == 2
    assert [orjson.loads(line)["id"] for line in (tmp_path / "again.jsonl").read_bytes().splitlines()] == [
        "conn-2",
        "conn-6",
    ]


def test_report_summary_refuses_reports_of_different_jobs(tmp_path: Path) -> None:
    """Several reports are read as one only if they are reports of one job."""
    one = Shard(tmp_path, 0, plan_for(2)).run([outcome("1", "contoso")])
    (tmp_path / "other").mkdir()
    other = Shard(tmp_path / "other", 1, plan_for(2), sha="e" * 64).run([outcome("4", "fabrikam")])
    result = invoke(tmp_path, "report", "summary", str(one.path), str(other.path))
    assert result.exit_code == 2
    assert "is a report of another job" in result.stderr


def test_the_shard_can_come_from_bulkconn_shard(workdir: Path) -> None:
    """BULKCONN_SHARD names the shard as --shard would (here out of range: refused, naming the variable)."""
    with contextlib.chdir(workdir):
        result = CliRunner().invoke(
            cli, ["run", "job.jsonl"], env={"BULKCONN_TEST_SECRET": "x", "BULKCONN_SHARD": "5/2"}
        )
    assert result.exit_code == 2
    assert "BULKCONN_SHARD: shard 5 is out of range; with 2 shard(s) use 0 to 1" in result.stderr
