"""Helpers shared by the CLI commands: messages, exit codes, the run-and-summarise path."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from bulkconn.cli.display import ChildProgress, Display, summary_table
from bulkconn.config import Config, load_config
from bulkconn.errors import AuthError, UsageError
from bulkconn.job import JobScan
from bulkconn.processes import final_record
from bulkconn.runner import RunOptions, RunResult, execute

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# `plan`: changes pending (0 = nothing to change). `auth check`: Graph kept failing (5xx/429/no answer), not a credential.
EXIT_CHANGES_PENDING, EXIT_SERVICE = 4, 5
# `run --processes`: a shard process crashed (killed, out of memory, a bug); its report is unfinished, resume it.
EXIT_SHARD_CRASHED = 6
F = TypeVar("F", bound=Callable[..., Any])


def err(message: str) -> None:
    click.echo(f"bulkconn: {message}", err=True)


def user_errors(fn: F) -> F:
    """Turn the user's own mistakes into one clear line and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            err(f"error: {exc}")
            sys.exit(EXIT_USAGE)
        except AuthError as exc:
            err(f"authentication failed: {exc}")
            sys.exit(EXIT_AUTH)
        except KeyboardInterrupt:
            err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            # A disk that filled up or a file that vanished mid-run: say so plainly. What the report
            # already holds is durable; resume once the cause is fixed.
            err(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def get_config(path: Path | None) -> Config:
    config = load_config(path)
    for warning in config.warnings:
        err(f"warning: {warning}")
    return config


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default: $BULKCONN_CONFIG, else ./bulkconn.toml, else the AZURE_* variables).",
)


def exit_code_for(counts: Mapping[str, int]) -> int:
    """1 when any operation failed, was invalid or is uncertain; else 0."""
    bad = sum(counts.get(s, 0) for s in ("failed", "invalid", "uncertain"))
    return EXIT_FAILED if bad else EXIT_OK


def exit_code(result: RunResult) -> int:
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.tenants and len(result.auth_failures) >= result.tenants:
        return EXIT_AUTH
    return exit_code_for(result.counts)


def default_report(job: Path) -> Path:
    return job.with_name(job.name.removesuffix(".jsonl") + ".report.jsonl")


def print_summary(result: RunResult, resume_command: str) -> None:
    console = Console(stderr=True)
    console.print(summary_table(result.counts, result.per_tenant))
    for tenant, problem in sorted(result.auth_failures.items()):
        console.print(f"[red]tenant {tenant} quarantined[/red]: {problem}", markup=True, highlight=False)
    console.print(f"report: {result.report}  ({result.duration_s:.1f} s)", highlight=False)
    if result.interrupted:
        # soft_wrap: the command stays on one line however narrow the terminal, so it can be copied whole
        console.print(f"interrupted; resume with:\n  {resume_command}", highlight=False, soft_wrap=True)


def run_and_report(
    job: Path,
    config: Config,
    options: RunOptions,
    quiet: bool,
    resume_command: str,
    on_scanned: Callable[[JobScan], None] = lambda scan: None,
    *,
    child: bool = False,
) -> int:
    """Run with a progress display and print the summary; a child of ``--processes`` speaks JSON on stdout instead."""
    display: Display | ChildProgress = ChildProgress() if child else Display(quiet=quiet)
    try:
        result = asyncio.run(execute(job, config, options, on_tick=display.update, on_scanned=on_scanned))
    finally:
        display.close()
    if child:
        click.echo(final_record(result).decode(), nl=False)
        return EXIT_OK if result.nothing_to_do else exit_code(result)
    if result.nothing_to_do:
        return EXIT_OK  # a resume with nothing left: the caller judges the report as it stands
    print_summary(result, resume_command)
    return exit_code(result)
