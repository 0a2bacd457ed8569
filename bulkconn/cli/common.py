"""Helpers shared by the CLI commands: messages, exit codes, the run-and-summarise path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import orjson
from msgspec import Struct

from bulkconn.childpipe import final_record
from bulkconn.cli.display import ChildProgress, Display, drawn_plain, rich_summary, summary_grid, summary_text
from bulkconn.cli.problems import (
    RunCommands,
    echo_next_steps,
    echo_problems,
    invalid_line,
    outcome_json,
    outcome_line,
)
from bulkconn.config import Config, load_config
from bulkconn.errors import IDENTITY_UNREACHABLE, AuthError, IdentityUnreachable, JobError, UsageError
from bulkconn.jobscan import JobScan
from bulkconn.lock import ReportLock
from bulkconn.model import CONFLICT
from bulkconn.runner import RunOptions, RunResult, StrictRefusal, execute

if TYPE_CHECKING:  # a report is read back only by a resume (or an existing report's summary)
    from bulkconn.report.reader import ReportState

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# 4, `plan`: changes pending (0 = nothing to change).
# 5, a service that never gave a usable answer, not a credential: `auth check`, Graph kept failing (5xx/429/no answer)
# or the identity service could not be reached, for some tenant; `run`, no tenant could even reach the identity service
# (DNS, refused, TLS, timeout: nothing was sent and the credentials were never looked at). 3 stays "credentials
# refused": a run where some tenant's credentials were refused and no tenant got a token exits 3.
EXIT_CHANGES_PENDING, EXIT_SERVICE = 4, 5
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader (| head) went away
# `run --processes`: a shard process crashed (killed, out of memory, a bug); its report is unfinished, resume it.
EXIT_SHARD_CRASHED = 6
F = TypeVar("F", bound=Callable[..., Any])


def err(message: str) -> None:
    click.echo(f"bulkconn: {message}", err=True)


def _output_gone() -> None:
    """A reader that closed our output early (``bulkconn ... | head``): stop quietly, as a shell tool does.

    Python's own advice (docs.python.org/3/library/signal.html#note-on-sigpipe): point the standard streams
    at devnull, so that the flush at exit does not raise again and print "Exception ignored ... BrokenPipeError".
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    sys.exit(EXIT_PIPE)


def _auth_failed(exc: AuthError, *, as_json: bool) -> NoReturn:
    if isinstance(exc, IdentityUnreachable):  # no answer at all: not a verdict on the credentials
        _fail(EXIT_SERVICE, exc.describe(), as_json=as_json)
    _fail(EXIT_AUTH, f"authentication failed: {exc}", as_json=as_json)


def _fail(code: int, message: str, *, as_json: bool, said: str | None = None) -> NoReturn:
    """Say ``said`` (default ``bulkconn: MESSAGE``) on stderr and exit ``code``; with ``--json`` stdout holds
    ``{"error": MESSAGE, "exit_code": CODE}`` too."""
    click.echo(said if said is not None else f"bulkconn: {message}", err=True)
    if as_json:
        click.echo(orjson.dumps({"error": message, "exit_code": code}).decode())
    sys.exit(code)


def user_errors(fn: F) -> F:
    """Turn the user's own mistakes into one clear line and exit code 2, never a traceback.

    A command given ``--json`` (``as_json``) also writes ``{"error": MESSAGE, "exit_code": CODE}`` on stdout, so a
    script reading the document gets one whatever happened (docs/command-line.md).
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            _output_gone()
        except StrictRefusal as exc:
            echo_problems((invalid_line(exc.file, p) for p in exc.problems), exc.invalid)
            _fail(EXIT_USAGE, str(exc), as_json=as_json, said=f"bulkconn: error: {exc}")
        except JobError as exc:  # FILE:LINE: message, like every other problem in a job
            _fail(EXIT_USAGE, str(exc), as_json=as_json, said=str(exc) if exc.file else f"bulkconn: error: {exc}")
        except UsageError as exc:
            _fail(EXIT_USAGE, str(exc), as_json=as_json, said=f"bulkconn: error: {exc}")
        except AuthError as exc:
            _auth_failed(exc, as_json=as_json)
        except KeyboardInterrupt:
            _fail(EXIT_INTERRUPTED, "interrupted", as_json=as_json)
        except OSError as exc:
            # A disk that filled up or a file that vanished mid-run: say so plainly. What the report
            # already holds is durable; resume once the cause is fixed.
            message = f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
            _fail(EXIT_FAILED, message, as_json=as_json, said=f"bulkconn: error: {message}")

    return wrapper  # type: ignore[return-value]


def get_config(path: Path | None, *, read_secrets: bool = True, per_tenant_errors: bool = False) -> Config:
    """The configuration, its warnings said; ``read_secrets=False`` where nothing will be sent.

    ``per_tenant_errors=True``: each tenant's own mistake is said here and kept in ``Config.problems``.
    """
    config = load_config(path, read_secrets=read_secrets, per_tenant_errors=per_tenant_errors)
    for problem in config.problems.values():
        err(f"error: {problem}")
    for warning in config.warnings:
        err(f"warning: {warning}")
    return config


config_option = click.option(
    "--config",
    "config_path",
    envvar="BULKCONN_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default: $BULKCONN_CONFIG, else ./bulkconn.toml, else the AZURE_* variables).",
)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="One JSON document on stdout at the end; everything else on stderr."
)


def not_reached(counts: Mapping[str, int], conflicts: int = 0) -> int:
    """Operations that did not end as their line asked: failed, invalid, uncertain, or left alone (Conflict)."""
    return sum(counts.get(s, 0) for s in ("failed", "invalid", "uncertain")) + conflicts


def exit_code_for(counts: Mapping[str, int], conflicts: int = 0) -> int:
    """1 when any operation failed, was invalid, is uncertain or was left alone as a conflict; else 0.

    A skip as ``Unchanged`` reached the asked state; a ``Conflict`` did not (the object holds someone else's
    change), so it fails the run as a failure does.
    """
    return EXIT_FAILED if not_reached(counts, conflicts) else EXIT_OK


def exit_code(result: RunResult) -> int:
    if result.interrupted:
        return EXIT_INTERRUPTED
    return no_tenant_exit_code(result) or exit_code_for(result.counts, result.skip_reasons[CONFLICT])


def no_tenant_exit_code(result: RunResult) -> int | None:
    """When no tenant got anywhere: 5 if none even reached the identity service, else 3; None otherwise."""
    if result.tenants and len(result.auth_failures) >= result.tenants:
        return EXIT_SERVICE if set(result.auth_failures) <= set(result.identity_unreachable) else EXIT_AUTH
    return None


def default_report(job: Path) -> Path:
    return job.with_name(job.name.removesuffix(".jsonl") + ".report.jsonl")


def echo_json(document: Any) -> None:
    """The one JSON document a ``--json`` command writes to stdout."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


class Final(Struct, frozen=True):
    """The report's final counts after this run (a resume adds the earlier runs')."""

    counts: Mapping[str, int]
    conflicts: int

    @classmethod
    def of_run(cls, result: RunResult) -> Final:
        return cls(result.counts, result.skip_reasons[CONFLICT])

    @classmethod
    def of_report(cls, report: Path, read: ReportState | None = None) -> Final:
        """``read``: the report as the resume read it; then only what this run appended is read."""
        from bulkconn.report.reader import read_state, update_state

        state = read_state(report) if read is None else update_state(read, report)
        return cls(state.counts(), state.conflicts())


def _quarantine_line(result: RunResult, tenant: str, *, markup: bool) -> str:
    """Why a tenant stopped, once: its operations that failed for that reason are not listed one by one."""
    problem = result.auth_failures[tenant]
    if markup:
        from rich.markup import escape  # rich: only once something is printed on a terminal

        problem = escape(problem)
    red, end = ("[red]", "[/red]") if markup else ("", "")
    if tenant in result.identity_unreachable:
        detail = problem.removeprefix(f"{IDENTITY_UNREACHABLE}: tenant {tenant!r}: ")
        line = f"{red}tenant {tenant} not run{end}: {detail}"
    else:
        line = f"{red}tenant {tenant} quarantined{end}: {problem}"
    unsent = result.not_sent.get(tenant, 0)
    return line + (f"; {unsent} operation(s) failed unsent for this reason (each is in the report)" if unsent else "")


def print_summary(result: RunResult, commands: RunCommands, final: Final) -> None:
    """The table, the first problems and the next commands, on stderr."""
    grid = summary_grid(
        result.counts, result.per_tenant, already_final=result.skipped_by_tenant, conflicts=result.conflicts_by_tenant
    )
    text = summary_text(*grid) if drawn_plain(sys.stderr) else None
    if text is None:
        _print_rich(result, grid)
    else:  # the same characters rich would write here, without importing it
        sys.stderr.write(text)
        for tenant in sorted(result.auth_failures):
            click.echo(_quarantine_line(result, tenant, markup=False), err=True)
    bad = not_reached(result.counts, result.skip_reasons[CONFLICT]) - sum(result.not_sent.values())
    echo_problems((outcome_line(commands.job, o) for o in result.problems), bad)
    click.echo(f"report: {result.report}  ({result.duration_s:.1f} s)", err=True)
    if result.stopped_because:
        click.echo(
            f"stopped: {result.stopped_because}; restore the job as it was to resume this report, "
            "or run the changed job into a new report (--report NEW)",
            err=True,
        )
    elif result.interrupted:
        click.echo("interrupted; the report is complete up to here", err=True)
    echo_next_steps(_next_steps(result, commands, final))


def _print_rich(result: RunResult, grid: tuple[list[str], list[list[str]]]) -> None:
    """The summary table and the quarantined tenants through rich (a terminal: colour, wrapping)."""
    from bulkconn.cli.console import console as rich_console  # rich: at the end of a run, not at start-up

    console = rich_console(stderr=True)
    header, rows = grid
    console.print(rich_summary(header, rows))
    for tenant in sorted(result.auth_failures):
        console.print(_quarantine_line(result, tenant, markup=True), markup=True, highlight=False)


def _next_steps(result: RunResult, commands: RunCommands, final: Final) -> list[tuple[str, str]]:
    return commands.next_steps(final.counts, interrupted=result.interrupted, conflicts=final.conflicts)


def run_json(result: RunResult, commands: RunCommands, final: Final, code: int) -> dict[str, Any]:
    """The document ``run --json`` writes (``final``: the report's counts, earlier runs included)."""
    return {
        "job": str(commands.job),
        "report": str(result.report),
        "exit_code": code,
        "interrupted": result.interrupted,
        "nothing_to_do": result.nothing_to_do,
        "duration_s": round(result.duration_s, 3),
        "counts": dict(result.counts),
        "skipped_by_reason": dict(result.skip_reasons),
        "already_final": result.skipped_from_report,
        "per_tenant": {tenant: dict(counts) for tenant, counts in sorted(result.per_tenant.items())},
        "report_counts": dict(final.counts),
        "report_conflicts": final.conflicts,
        "auth_failures": result.auth_failures,
        "not_sent": dict(result.not_sent),  # per tenant: failed for its auth failure, so not in "problems"
        "problems": [outcome_json(o) for o in result.problems],
        "next": [{"what": what, "command": command} for what, command in _next_steps(result, commands, final)],
    }


def run_and_report(
    config: Config,
    options: RunOptions,
    commands: RunCommands,
    *,
    quiet: bool,
    as_json: bool = False,
    on_scanned: Callable[[JobScan], None] = lambda scan: None,
    lock: ReportLock | None = None,
    child: bool = False,
) -> int:
    """Run, then summarise on stderr (and in JSON on stdout); the exit code judges the whole report.

    A child of ``run --processes`` (``child``) writes its progress and its end as JSON lines on stdout instead.
    """
    display: Display | ChildProgress = ChildProgress() if child else Display(quiet=quiet)
    try:
        result = asyncio.run(
            execute(commands.job, config, options, on_tick=display.update, on_scanned=on_scanned, lock=lock)
        )
    finally:
        display.close()
    final = (
        Final.of_report(options.report, options.resumed_state) if options.resumed else Final.of_run(result)
    )  # earlier runs count too
    code = exit_code(result)
    if code not in (EXIT_INTERRUPTED, EXIT_AUTH, EXIT_SERVICE):
        code = exit_code_for(final.counts, final.conflicts)
    if child:
        click.echo(final_record(result).decode(), nl=False)
        return code
    if not result.nothing_to_do:  # else the resume message said it all
        print_summary(result, commands, final)
    if as_json:
        echo_json(run_json(result, commands, final, code))
    return code
