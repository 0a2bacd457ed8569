"""Every -o: an existing file is replaced only with --force, an input never, and `-o -` is standard output."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from tests.conftest import World
from tests.test_merge import complete_set, plan_for
from tests.test_report_show import sample_report

REPORT = "job.report.jsonl"


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_report_show_never_replaces_its_report_or_job_and_an_existing_file_only_with_force(tmp_path: Path) -> None:
    """`report show R -o R` (or -o JOB) is refused even with --force; another existing file needs --force."""
    report = sample_report(tmp_path)
    job = tmp_path / "job.jsonl"
    before = report.read_bytes(), job.read_bytes()
    for target in (report, job):
        for force in ((), ("--force",)):
            code, _, err = _invoke("report", "show", str(report), "-o", str(target), *force)
            assert code == 2 and "write the handover report to another file" in err, err
    assert (report.read_bytes(), job.read_bytes()) == before
    kept = tmp_path / "handover.md"
    kept.write_text("mine")
    code, _, err = _invoke("report", "show", str(report), "-o", str(kept))
    assert code == 2 and "already exists; pass --force" in err and kept.read_text() == "mine"
    assert _invoke("report", "show", str(report), "-o", str(kept), "--force")[0] == 0
    assert kept.read_text().startswith("# Change report")
    code, out, _ = _invoke("report", "show", str(report), "-o", "-")
    assert code == 0 and out.startswith("# Change report") and not (Path.cwd() / "-").exists()


def test_report_failed_to_standard_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report failed R -o -` writes the job of failures on stdout (and no file named '-'); with --json it is refused."""
    report = sample_report(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = _invoke("report", "failed", str(report), "-o", "-", "--force")
    assert code == 0, err
    assert "defaults" in orjson.loads(out.splitlines()[0])  # the job of failures starts with the job's defaults
    assert "failed operation(s) from" in err and "written to standard output" in err
    assert not (tmp_path / "-").exists()
    code, _, err = _invoke("report", "failed", str(report), "-o", "-", "--json")
    assert code == 2 and "both write to standard output" in err


@pytest.mark.e2e
def test_rollback_export_and_plan_refuse_their_inputs_and_existing_files(world: World) -> None:
    """rollback -o REPORT, plan --out JOB, export -o CONFIG: refused, files intact; an existing file needs --force."""
    assert world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--backup").returncode == 0
    precious = {name: (world.dir / name).read_bytes() for name in (REPORT, "job.jsonl", "bulkconn.toml")}
    refused = [
        ("rollback", REPORT, "-o", REPORT),
        ("rollback", REPORT, "-o", "job.jsonl"),
        ("plan", "job.jsonl", "--config", "bulkconn.toml", "--out", "job.jsonl"),
        ("export", "--config", "bulkconn.toml", "-o", "bulkconn.toml"),
    ]
    for args in refused:
        proc = world.bulkconn(*args, "--force")
        assert proc.returncode == 2 and "to another file" in proc.stderr, (args, proc.stderr)
    assert {name: (world.dir / name).read_bytes() for name in precious} == precious
    (world.dir / "undo.jsonl").write_text("mine\n")
    kept = world.bulkconn("rollback", REPORT, "-o", "undo.jsonl")
    assert kept.returncode == 2 and "already exists; pass --force" in kept.stderr
    assert (world.dir / "undo.jsonl").read_text() == "mine\n"
    assert world.bulkconn("rollback", REPORT, "-o", "undo.jsonl", "--force").returncode == 0
    assert len((world.dir / "undo.jsonl").read_bytes().splitlines()) == 40
    exported = world.bulkconn("export", "--config", "bulkconn.toml", "-o", "-")
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 40 and not (world.dir / "-").exists()


def test_report_merge_replaces_an_earlier_merge_of_its_job_and_another_file_only_with_force(tmp_path: Path) -> None:
    """Merging again after a resume replaces the merged report; an unrelated file needs --force."""
    shards = [str(s.path) for s in complete_set(tmp_path, plan_for())]
    out = tmp_path / "job.report.jsonl"
    out.write_text("precious\n")
    code, _, err = _invoke("report", "merge", *shards, "-o", str(out))
    assert code == 2 and "already exists; pass --force" in err and out.read_text() == "precious\n"
    assert _invoke("report", "merge", *shards, "-o", str(out), "--force")[0] == 0
    assert _invoke("report", "merge", *shards, "-o", str(out))[0] == 0  # an earlier merge of this job
    assert out.read_text().startswith('{"type":"header"')
