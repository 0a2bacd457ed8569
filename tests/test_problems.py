"""How problems, next commands and the resume message are worded (pure; the e2e tests run the commands)."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path

from bulkconn.cli import option_variables
from bulkconn.cli.problems import RunCommands, invalid_line, outcome_line, problem_line
from bulkconn.expansion import RecordedExpansion
from bulkconn.jobline import Invalid
from bulkconn.model import ErrorInfo, Outcome, Status
from bulkconn.resume import ResumePlan

COMMANDS = RunCommands(Path("jobs/rename servers.jsonl"), Path("out/r.jsonl"), Path("bulkconn.toml"))


def test_problem_lines_are_compiler_style() -> None:
    """FILE:LINE: message for lines, FILE: message without one; jobline.py's own "line N:" is not repeated."""
    assert problem_line("job.jsonl", 7, "missing 'id'") == "job.jsonl:7: missing 'id'"
    assert problem_line("job.jsonl", 0, "not UTF-8") == "job.jsonl: not UTF-8"
    assert invalid_line("j.csv", Invalid.of_line(3, "expected a JSON object")) == "j.csv:3: expected a JSON object"
    failed = Outcome("k", 9, "contoso", "abc", "update", Status.FAILED, 403, error=ErrorInfo("Forbidden", "no"))
    assert outcome_line("j.jsonl", failed) == "j.jsonl:9: contoso abc update: failed (HTTP 403): Forbidden: no"


def test_next_steps_for_each_kind_of_trouble_keep_the_config_and_quote_paths() -> None:
    """Interrupted: resume first; failed: report failed + run it, or --retry-failed; uncertain: --resend-uncertain."""
    steps = COMMANDS.next_steps({"failed": 2, "uncertain": 1, "invalid": 1}, interrupted=True)
    commands = [shlex.split(command) for _, command in steps]
    job, report = "jobs/rename servers.jsonl", "out/r.jsonl"
    again = ["bulkconn", "run", job, "--report", report, "--resume"]
    assert commands == [
        [*again, "--config", "bulkconn.toml"],
        ["bulkconn", "report", "failed", report, "-o", "jobs/rename servers.retry.jsonl"],
        ["bulkconn", "run", "jobs/rename servers.retry.jsonl", "--config", "bulkconn.toml"],
        [*again, "--retry-failed", "--config", "bulkconn.toml"],
        [*again, "--resend-uncertain", "--config", "bulkconn.toml"],
        [*again, "--recheck-invalid", "--force", "--config", "bulkconn.toml"],
    ]
    assert COMMANDS.next_steps({"succeeded": 5}, interrupted=False) == []
    no_config = RunCommands(Path("j.csv"), Path("r.jsonl"), None)
    assert no_config.next_steps({"uncertain": 1}, interrupted=False)[0][1] == (
        "bulkconn run j.csv --report r.jsonl --resume --resend-uncertain"
    )


def test_the_resume_message_adds_up() -> None:
    """30 recorded (10 failed, 20 succeeded), --retry-failed: 20 skipped + 10 done again; to go counts the job's."""
    plan = ResumePlan(
        Path("r.jsonl"),
        frozenset(str(n) for n in range(20)),
        (),
        Counter({"failed": 10, "succeeded": 20}),
        0,
        RecordedExpansion(),
        skipped=Counter({"succeeded": 20}),
        again=Counter({"failed": 10}),
    )
    assert plan.starting(15) == (
        "resuming r.jsonl: 20 operation(s) already final are skipped (20 succeeded); "
        "15 to go, 10 of them recorded before (10 failed) and done again"
    )
    finished = ResumePlan(Path("r.jsonl"), frozenset({"1"}), (), Counter({"succeeded": 1}), 0, RecordedExpansion())
    assert finished.starting(0) == (
        "nothing to resume: every operation in r.jsonl already has a final result (1 succeeded)"
    )


def test_the_documented_variables_are_the_real_ones() -> None:
    """docs/command-line.md lists exactly the BULKCONN_* variable of every option (--debug once, for all)."""
    real = [row for row in option_variables() if row[1] != "--debug" or row[0] == "bulkconn"]
    doc = (Path(__file__).parent.parent / "docs" / "command-line.md").read_text()
    rows = re.findall(r"^\| `(bulkconn[^`]*)` \| `(--[^`]+)` \| `(BULKCONN_[A-Z0-9_]+)` \|$", doc, re.MULTILINE)
    assert rows == real
    for command, option, var in real:
        shared = {"--config": "BULKCONN_CONFIG", "--debug": "BULKCONN_DEBUG"}.get(option)
        named = "_".join([*command.split(), option.lstrip("-")]).replace("-", "_").upper()
        assert var == (shared or named)
