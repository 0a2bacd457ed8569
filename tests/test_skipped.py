"""Skipped operations (pure): an Unchanged skip reached the asked state, a Conflict did not; both are counted alike."""

from __future__ import annotations

import csv
import io
import shlex
from collections import Counter
from pathlib import Path

import orjson

from bulkconn.cli.common import exit_code_for
from bulkconn.cli.display import progress_line, summary_table
from bulkconn.cli.problems import RunCommands, outcome_json, outcome_line
from bulkconn.fingerprint import fingerprint
from bulkconn.model import CONFLICT, UNCHANGED, ErrorInfo, Outcome, Progress, Status, reached
from bulkconn.report import format as fmt
from bulkconn.report.handover import load_handover
from bulkconn.report.reader import read_state, summarize
from bulkconn.report.show import render
from bulkconn.report.writer import ReportWriter
from bulkconn.resume import plan_resume

ID = ["bbbbbbbb-0000-4000-8000-00000000000" + str(n) for n in range(4)]
FOUND = 'changed since bulkconn wrote it: \'serverName\' is now "by-hand.example.com", bulkconn wrote "new"'


def _skip(line: int, code: str, message: str) -> Outcome:
    outcome = Outcome(str(line), line, "contoso", ID[line - 1], "update", Status.SKIPPED, http_status=200)
    outcome.reason = ErrorInfo(code, message)
    outcome.finished_at = "2026-05-04T09:30:00.000Z"
    return outcome


CONFLICTED = _skip(1, CONFLICT, FOUND)
ALREADY = _skip(2, UNCHANGED, "already has the patched value of serverName")


def test_an_unchanged_skip_reached_the_asked_state_and_a_conflict_did_not() -> None:
    """Unchanged: no problem, exit 0; Conflict: a problem line with its code and what was found, exit 1."""
    assert reached(Status.SKIPPED, UNCHANGED) and not reached(Status.SKIPPED, CONFLICT)
    assert exit_code_for({"skipped": 40}) == 0
    assert exit_code_for({"skipped": 40}, conflicts=1) == 1
    assert outcome_line("undo.jsonl", CONFLICTED) == f"undo.jsonl:1: contoso {ID[0]} update: skipped: Conflict: {FOUND}"
    problem = outcome_json(CONFLICTED)
    assert (problem["status"], problem["code"]) == ("skipped", "Conflict") and "HTTP" not in problem["message"]


def test_a_conflict_is_followed_by_the_resume_that_overwrites_it() -> None:
    """Next command for conflicts: the same job and report, --resume --force (and the options every run keeps)."""
    commands = RunCommands(Path("undo.jsonl"), Path("undo.report.jsonl"), Path("c.toml"), ("--backup",))
    assert commands.next_steps({"skipped": 3}, interrupted=False) == []
    [(what, command)] = commands.next_steps({"skipped": 3}, interrupted=False, conflicts=1)
    assert "1 object(s) changed since bulkconn wrote them" in what
    assert shlex.split(command) == [
        "bulkconn", "run", "undo.jsonl", "--report", "undo.report.jsonl", "--resume", "--force", "--backup",
        "--config", "c.toml",
    ]  # fmt: skip


def test_the_progress_line_and_the_table_count_skips_and_conflicts() -> None:
    """Progress: `3 skipped (1 conflict)`; the table's skipped column is this run's, conflicts and resumes apart."""
    progress = Progress(total=4)
    progress.record("contoso", Status.SUCCEEDED)
    progress.record("contoso", Status.SKIPPED, reason=UNCHANGED)
    progress.record("contoso", Status.SKIPPED, reason=UNCHANGED)
    progress.record("fabrikam", Status.SKIPPED, reason=CONFLICT)
    line = progress_line(progress)
    assert "4/4 done: 1 succeeded, 0 failed, 0 invalid, 0 uncertain, 3 skipped (1 conflict);" in line
    assert progress.skip_reasons == Counter({UNCHANGED: 2, CONFLICT: 1})
    plain = summary_table(progress.done, progress.per_tenant)
    assert [c.header for c in plain.columns][-1] == "skipped" and list(plain.columns[-1].cells)[-1] == "[b]3[/b]"
    table = summary_table(
        progress.done, progress.per_tenant, conflicts=progress.conflicts_by_tenant, already_final={"contoso": 7}
    )
    assert [c.header for c in table.columns][-3:] == ["skipped", "conflicts", "already final"]
    assert list(table.columns[-2].cells) == ["0", "1", "[b]1[/b]"]


def _report(tmp: Path) -> Path:
    job = tmp / "undo.jsonl"
    lines = [
        {"tenant": "contoso", "id": ID[n], "patch": {"@odata.type": "#microsoft.graph.x", "serverName": "old"}}
        for n in range(3)
    ]
    job.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    report = tmp / "undo.report.jsonl"
    printed = fingerprint(job)
    with ReportWriter(report) as writer:
        writer.write(fmt.header(
            run_id="r", job=str(job), job_sha256=printed.sha256, job_bytes=printed.size, job_lines=printed.lines,
            bulkconn_version="0", started_at="2026-05-04T09:30:00.000Z", resumed=False, tenants=["contoso"],
            settings={},
        ))  # fmt: skip
        writer.result(CONFLICTED)
        writer.result(ALREADY)
        writer.result(
            Outcome("3", 3, "contoso", ID[2], "update", Status.SUCCEEDED, 200, finished_at="2026-05-04T09:30:01Z")
        )
        writer.write(fmt.summary(counts={}, interrupted=False, skipped_from_earlier_runs=0, auth_failures={},
                                 duration_s=1.0, finished_at="2026-05-04T09:30:01.000Z"))  # fmt: skip
    return report


def test_the_report_remembers_conflicts_and_a_forced_resume_sends_them_again(tmp_path: Path) -> None:
    """Read back: 2 skipped of which 1 conflict; `--resume --force` redoes the conflict, nothing else."""
    report = _report(tmp_path)
    state = read_state(report)
    assert state.counts() == Counter({"skipped": 2, "succeeded": 1}) and state.conflicts() == 1
    job = tmp_path / "undo.jsonl"
    kept = plan_resume(job, report, retry_failed=False, recheck_invalid=False, resend_uncertain=False, force=False)
    forced = plan_resume(job, report, retry_failed=False, recheck_invalid=False, resend_uncertain=False, force=True)
    assert kept.skip_keys == {"1", "2", "3"} and forced.skip_keys == {"2", "3"}
    assert summarize(report)["by_skip_reason"] == {"Conflict": 1, "Unchanged": 1}


def test_the_handover_shows_each_skip_with_its_reason_and_no_annotation_as_a_change(tmp_path: Path) -> None:
    """md, html and csv: the conflict in its own section with what was found; @odata.type is not a change."""
    handover = load_handover(_report(tmp_path))
    assert handover.outcome() == "3 operations: 1 succeeded, 2 skipped (1 conflict)"
    markdown = render(handover, "md")
    conflicts = markdown.split("### Left alone: changed since bulkconn wrote them", 1)[1].split("###", 1)[0]
    assert ID[0] in conflicts and "Conflict: changed since bulkconn wrote it" in conflicts and ID[1] not in conflicts
    assert "### Already as asked: nothing sent" in markdown and "Unchanged: already has" in markdown
    assert "odata" not in markdown and "| serverName | old | 1 |" in markdown
    html = render(handover, "html")
    assert "Skipped (Conflict)" in html and "by-hand.example.com" in html and "odata" not in html
    rows = list(csv.DictReader(io.StringIO(render(handover, "csv"))))
    assert [(r["status"], r["reason"].split(":")[0], r["change"]) for r in rows] == [
        ("Skipped (Conflict)", "Conflict", "serverName = old"),
        ("Skipped (Unchanged)", "Unchanged", "serverName = old"),
        ("Succeeded", "", "serverName = old"),
    ]
