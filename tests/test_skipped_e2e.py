"""Skipped operations, end to end: counted, explained and acted on alike in every place a user reads them."""

from __future__ import annotations

import csv
import io
import shlex
from typing import Any

import orjson
import pytest

from tests.conftest import World

pytestmark = pytest.mark.e2e  # real emulator

CONFIG = ("--config", "bulkconn.toml")
BY_HAND = "by-hand.example.com"


def _problems(stderr: str, job: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{job}:")]


def _total_row(stderr: str) -> list[str]:
    total = next(line for line in stderr.splitlines() if "total" in line)
    return [cell.strip() for cell in total.strip("│ ").split("│")]


def _connector(world: World, alias: str, object_id: str) -> dict[str, Any]:
    tenant = next(t for t in world.emu.core.world.tenants.values() if t.alias == alias)
    return dict(tenant.connectors[object_id])


def test_a_job_run_again_with_skip_unchanged_is_forty_skips_and_no_problem(world: World) -> None:
    """Run twice with --skip-unchanged: exit 0, the progress line and the table count 40 skipped, no problem lines."""
    assert world.bulkconn("run", "job.jsonl", *CONFIG, "-q", "--skip-unchanged").returncode == 0
    again = world.bulkconn("run", "job.jsonl", *CONFIG, "--skip-unchanged", "--report", "again.jsonl", "--json")
    assert again.returncode == 0, again.stderr
    assert "40/40 done: 0 succeeded, 0 failed, 0 invalid, 0 uncertain, 40 skipped;" in again.stderr
    assert _total_row(again.stderr) == ["total", "0", "0", "0", "0", "40"]
    assert _problems(again.stderr, "job.jsonl") == [] and "next:" not in again.stderr
    document = orjson.loads(again.stdout)
    assert document["counts"] == {"skipped": 40} and document["skipped_by_reason"] == {"Unchanged": 40}
    assert document["problems"] == [] and document["next"] == [] and document["already_final"] == 0
    summary = world.bulkconn("report", "summary", "again.jsonl")
    assert "skipped Unchanged: 40" in summary.stdout


def _undo_with_a_conflict(world: World) -> tuple[str, str, str]:
    """A --backup run, its undo job, and one of its objects changed by hand since: (tenant, object id, old name)."""
    first = world.bulkconn("run", "job.jsonl", *CONFIG, "-q", "--backup")
    assert first.returncode == 0, first.stderr
    assert world.bulkconn("rollback", "job.report.jsonl", "-o", "undo.jsonl").returncode == 0
    undo = orjson.loads((world.dir / "undo.jsonl").read_bytes().splitlines()[0])
    hand = world.dir / "hand.jsonl"
    hand.write_bytes(orjson.dumps({"tenant": undo["tenant"], "id": undo["id"], "patch": {"serverName": BY_HAND}}))
    assert world.bulkconn("run", "hand.jsonl", *CONFIG, "-q").returncode == 0
    return str(undo["tenant"]), str(undo["id"]), str(undo["patch"]["serverName"])


def test_an_undo_that_met_a_conflict_says_so_everywhere_and_force_finishes_it(world: World) -> None:
    """The object changed by hand is not restored: exit 1, a Conflict problem line, the next command with --force."""
    alias, object_id, old_name = _undo_with_a_conflict(world)
    undo = world.bulkconn("run", "undo.jsonl", *CONFIG, "--json")
    assert undo.returncode == 1, undo.stderr
    assert "40/40 done: 39 succeeded, 0 failed, 0 invalid, 0 uncertain, 1 skipped (1 conflict);" in undo.stderr
    assert _total_row(undo.stderr) == ["total", "39", "0", "0", "0", "1", "1"]
    [problem] = _problems(undo.stderr, "undo.jsonl")
    assert f"{object_id} update: skipped: Conflict: changed since bulkconn wrote it: 'serverName' is now" in problem
    assert BY_HAND in problem and "HTTP" not in problem
    document = orjson.loads(undo.stdout)
    assert document["skipped_by_reason"] == {"Conflict": 1} and document["report_conflicts"] == 1
    assert [(p["id"], p["code"]) for p in document["problems"]] == [(object_id, "Conflict")]
    [step] = document["next"]
    assert "--resume" in step["command"] and "--force" in step["command"] and "changed since" in step["what"]
    _report_show_names_the_conflict(world, object_id)
    forced = world.bulkconn(*shlex.split(step["command"])[1:], "-q")
    assert forced.returncode == 0, forced.stderr
    assert _connector(world, alias, object_id)["serverName"] == old_name


def _report_show_names_the_conflict(world: World, object_id: str) -> None:
    markdown = world.bulkconn("report", "show", "undo.report.jsonl").stdout
    section = markdown.split("### Left alone: changed since bulkconn wrote them", 1)[1].split("\n## ", 1)[0]
    assert object_id in section and "Conflict: changed since bulkconn wrote it" in section and BY_HAND in section
    assert "1 skipped (1 conflict)" in markdown
    html = world.bulkconn("report", "show", "undo.report.jsonl", "--format", "html").stdout
    assert "Left alone: changed since bulkconn wrote them" in html and BY_HAND in html
    text = world.bulkconn("report", "show", "undo.report.jsonl", "--format", "csv").stdout
    rows = {row["object_id"]: row for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))}
    assert rows[object_id]["status"] == "Skipped (Conflict)"
    assert rows[object_id]["reason"].startswith("Conflict: changed since bulkconn wrote it: 'serverName' is now")
    assert "Unknown error" not in text
