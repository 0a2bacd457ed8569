"""How problems and next steps are written, the same for ``validate``, ``run --dry-run`` and ``run``.

Every problem is one line on stderr in the compiler style editors and CI logs understand, ``FILE:LINE: message``;
after the first :data:`SHOWN` comes ``... and N more``. After a run that left anything not succeeded, the exact
commands that carry on from there (retry the failures, resend uncertain syncs, resume) follow.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from msgspec import Struct

from bulkconn.jobline import Invalid
from bulkconn.model import Outcome, Status

SHOWN = 20


def problem_line(file: Path | str, line: int, message: str) -> str:
    """``FILE:LINE: message`` (``FILE: message`` for a problem that has no line)."""
    return f"{file}:{line}: {message}" if line else f"{file}: {message}"


def _without_line(message: str, line: int) -> str:
    # jobline.py writes "line N: ..." so that a message stands alone; here the line is already in front.
    return message.removeprefix(f"line {line}: ")


def invalid_line(file: Path | str, item: Invalid) -> str:
    return problem_line(file, item.line, _without_line(item.message, item.line))


def outcome_message(outcome: Outcome) -> str:
    """What went wrong with one operation that did not succeed, without its file and line."""
    error = outcome.error
    if outcome.status is Status.INVALID:
        return _without_line(error.message, outcome.line) if error else "invalid"
    where = f"{outcome.tenant} {outcome.object_id} {outcome.action}"
    if outcome.status is Status.SKIPPED:  # not sent: the reason is what was found when the object was read
        reason = outcome.reason
        return f"{where}: skipped" + (f": {reason.code}: {reason.message}" if reason else "")
    http = f" (HTTP {outcome.http_status})" if outcome.http_status else ""
    why = f": {error.code}: {error.message}" if error else ""
    return f"{where}: {outcome.status.value}{http}{why}"


def outcome_line(file: Path | str, outcome: Outcome) -> str:
    return problem_line(file, outcome.line, outcome_message(outcome))


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    detail = outcome.error or outcome.reason  # a skip has no error, only the reason it was not sent
    return {
        "line": outcome.line,
        "key": outcome.key,
        "tenant": outcome.tenant,
        "id": outcome.object_id,
        "action": outcome.action,
        "status": outcome.status.value,
        "http_status": outcome.http_status,
        "code": detail.code if detail else None,
        "message": outcome_message(outcome),
    }


def invalid_json(item: Invalid) -> dict[str, Any]:
    return {
        "line": item.line,
        "key": item.key,
        "tenant": item.tenant,
        "message": _without_line(item.message, item.line),
    }


def echo_problems(lines: Iterable[str], total: int, *, shown: int = SHOWN) -> None:
    """The first ``shown`` lines on stderr, then ``... and N more`` when ``total`` says there are more."""
    count = 0
    for line in lines:
        if count == shown:
            break
        click.echo(line, err=True)
        count += 1
    if total > count:
        click.echo(f"... and {total - count} more", err=True)


class RunCommands(Struct, frozen=True):
    """The commands that continue a run, with the same job, report and ``--config``."""

    job: Path
    report: Path
    config: Path | None
    kept: tuple[str, ...] = ()  # run options every next run needs too (--skip-unchanged, --backup)
    shard: str = ""  # K/N: the shard whose report this is (not for a new job made of its failures)

    def run(self, *flags: str, job: Path | None = None, report: bool = True) -> str:
        args = ["bulkconn", "run", str(job or self.job)]
        if report:
            args += [*(["--shard", self.shard] if self.shard else []), "--report", str(self.report)]
        args += [*flags, *self.kept]
        if self.config is not None:
            args += ["--config", str(self.config)]
        return shlex.join(args)

    @property
    def resume(self) -> str:
        return self.run("--resume")

    @property
    def retry_job(self) -> Path:
        return self.job.with_name(self.job.name.removesuffix(".jsonl").removesuffix(".csv") + ".retry.jsonl")

    def next_steps(self, counts: Mapping[str, int], *, interrupted: bool, conflicts: int = 0) -> list[tuple[str, str]]:
        """(what, command) pairs for the report's final counts (``conflicts``: skipped as ``Conflict``)."""
        steps: list[tuple[str, str]] = []
        if interrupted:
            steps.append(("resume with (it carries on where it stopped)", self.resume))
        if counts.get(Status.FAILED.value):
            failed = ["bulkconn", "report", "failed", str(self.report), "-o", str(self.retry_job)]
            steps += [
                ("write the failed operations to a new job", shlex.join(failed)),
                ("and run that job", self.run(job=self.retry_job, report=False)),
                ("or retry them in this report", self.run("--resume", "--retry-failed")),
            ]
        if counts.get(Status.UNCERTAIN.value):
            steps.append(
                (
                    "resend the uncertain syncs (only once you know they did not happen)",
                    self.run("--resume", "--resend-uncertain"),
                )
            )
        if conflicts:
            steps.append(
                (
                    f"overwrite the {conflicts} object(s) changed since bulkconn wrote them (that change is lost)",
                    self.run("--resume", "--force"),
                )
            )
        if counts.get(Status.INVALID.value):
            steps.append(
                (
                    "correct the invalid lines in place (no line added or removed), then",
                    self.run("--resume", "--recheck-invalid", "--force"),
                )
            )
        return steps


def echo_next_steps(steps: Sequence[tuple[str, str]]) -> None:
    if not steps:
        return
    click.echo("next:", err=True)
    for what, command in steps:
        click.echo(f"  # {what}\n  {command}", err=True)
