"""``bulkconn run`` and ``bulkconn validate``: option parsing and rendering only; the run itself is the runner's.

Option defaults are read from the settings dataclasses (:class:`EngineSettings`, :class:`RetryPolicy`,
:class:`RunOptions`), so that they are stated once.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click
import orjson

from bulkconn.batching import MAX_BATCH
from bulkconn.cli.common import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    config_option,
    default_report,
    err,
    exit_code_for,
    get_config,
    run_and_report,
    user_errors,
)
from bulkconn.config import Config
from bulkconn.engine import EngineSettings
from bulkconn.errors import UsageError
from bulkconn.job import JobScan
from bulkconn.report.reader import read_state
from bulkconn.resume import plan_resume
from bulkconn.retry import RetryPolicy
from bulkconn.runner import RunOptions, plan, strict_check

ENGINE = EngineSettings()
POLICY = RetryPolicy()
DRAIN_TIMEOUT_S = RunOptions(report=Path()).drain_timeout_s


@click.command()
@click.argument("job", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report file (default: JOB.report.jsonl next to the job).",
)
@click.option(
    "--batch-size",
    default=ENGINE.batch_size,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH),
    help="Operations per $batch request; 1 sends single requests.",
)
@click.option(
    "--concurrency",
    default=ENGINE.concurrency,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Requests in flight across all tenants.",
)
@click.option(
    "--tenant-concurrency",
    type=click.IntRange(1, 100),
    help="Requests in flight per tenant (default: each tenant's `concurrency` setting, 4).",
)
@click.option(
    "--global-share",
    default=ENGINE.global_share,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="This process's share of Graph's global limit per app (130,000 requests per 10 s across all tenants); "
    "processes that run shards of one app split it.",
)
@click.option("--strict", is_flag=True, help="Refuse the whole job if any line is invalid.")
@click.option("--dry-run", is_flag=True, help="Validate and plan; send no write at all.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option(
    "--max-attempts",
    default=POLICY.max_attempts,
    show_default=True,
    type=click.IntRange(1, 1000),
    help=f"Sends per operation before giving up (a 500 gets at most {POLICY.max_attempts_500}).",
)
@click.option(
    "--time-budget",
    default=POLICY.time_budget_s,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds an operation may keep retrying.",
)
@click.option(
    "--backoff-base",
    default=POLICY.backoff_base_s,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Seconds; without Retry-After the n-th wait is uniform(0, min(cap, base*2^(n-1))).",
)
@click.option(
    "--backoff-cap", default=POLICY.backoff_cap_s, show_default=True, type=click.FloatRange(0.001), help="Seconds."
)
@click.option(
    "--retry-uncertain-sync",
    is_flag=True,
    help="Resend a sync whose earlier attempt may have reached the service (it is not idempotent).",
)
@click.option(
    "--drain-timeout",
    default=DRAIN_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to let in-flight requests finish after Ctrl-C.",
)
@click.option("--resume", is_flag=True, help="Continue the run recorded in --report; skip what already ended.")
@click.option("--retry-failed", is_flag=True, help="With --resume: also re-attempt operations that failed.")
@click.option("--recheck-invalid", is_flag=True, help="With --resume: validate and run invalid lines again.")
@click.option(
    "--resend-uncertain", is_flag=True, help="With --resume: resend syncs that may have been sent before a stop."
)
@click.option("--force", is_flag=True, help="With --resume: accept a job file that changed since the report began.")
@user_errors
def run(
    job: Path,
    config_path: Path | None,
    report_path: Path | None,
    batch_size: int,
    concurrency: int,
    tenant_concurrency: int | None,
    global_share: float,
    strict: bool,
    dry_run: bool,
    quiet: bool,
    max_attempts: int,
    time_budget: float,
    backoff_base: float,
    backoff_cap: float,
    retry_uncertain_sync: bool,
    drain_timeout: float,
    resume: bool,
    retry_failed: bool,
    recheck_invalid: bool,
    resend_uncertain: bool,
    force: bool,
) -> None:
    """Apply the changes listed in JOB (JSON Lines) and write a JSONL report."""
    config = get_config(config_path)
    if not job.is_file():
        raise UsageError(f"{job}: job file not found")
    if dry_run:
        sys.exit(asyncio.run(_dry_run(job, config, batch_size)))
    report = report_path or default_report(job)
    if not resume and (retry_failed or recheck_invalid or resend_uncertain or force):
        raise UsageError("--retry-failed, --recheck-invalid, --resend-uncertain and --force go with --resume")
    if not resume and report.exists() and report.stat().st_size:
        raise UsageError(f"{report}: report already exists; pass --report NEW, or resume it with --resume")
    settings = EngineSettings(
        batch_size=batch_size,
        concurrency=concurrency,
        tenant_concurrency=tenant_concurrency,
        global_share=global_share,
        policy=RetryPolicy(
            max_attempts=max_attempts,
            time_budget_s=time_budget,
            backoff_base_s=backoff_base,
            backoff_cap_s=backoff_cap,
            retry_uncertain_sync=retry_uncertain_sync,
        ),
    )
    options = RunOptions(report=report, settings=settings, strict=strict, drain_timeout_s=drain_timeout)
    on_scanned: Callable[[JobScan], None] | None = None
    if resume:
        plan = plan_resume(
            job,
            report,
            retry_failed=retry_failed,
            recheck_invalid=recheck_invalid,
            resend_uncertain=resend_uncertain,
            force=force,
        )
        options = replace(options, skip_keys=plan.skip_keys, resumed=True, prefill=plan.prefill)

        def say_what_is_left(scan: JobScan) -> None:
            click.echo(plan.starting(scan.valid + scan.invalid), err=True)

        on_scanned = say_what_is_left

    again = ["bulkconn", "run", str(job), "--report", str(report), "--resume"]
    if config_path:
        again += ["--config", str(config_path)]
    command = " ".join(shlex.quote(a) for a in again)
    code = run_and_report(job, config, options, quiet, command, on_scanned or (lambda scan: None))
    if resume and code not in (EXIT_INTERRUPTED, EXIT_AUTH):
        code = exit_code_for(read_state(report).counts())  # the whole report's final state decides
    sys.exit(code)


async def _dry_run(job: Path, config: Config, batch_size: int) -> int:
    the_plan = await plan(job, config, batch_size=batch_size)
    for problem in the_plan.problems:
        err(f"{job}:{problem.message}")
    click.echo(
        f"dry run: {the_plan.valid} valid operation(s), {the_plan.invalid} invalid line(s); nothing will be sent."
    )
    for tenant in the_plan.tenants:
        click.echo(
            f"  {tenant.alias}: {tenant.operations} operation(s) in {tenant.requests} request(s) to {tenant.endpoint}; "
            f"at least {tenant.min_minutes:.1f} min at {tenant.writes_per_window} writes per {tenant.window_s:g} s"
        )
        for req in tenant.examples:
            click.echo(f"    line {req.line}: {req.method} {req.url} {orjson.dumps(req.body).decode()}")
    return EXIT_FAILED if the_plan.invalid else EXIT_OK


@click.command()
@click.argument("job", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@user_errors
def validate(job: Path, config_path: Path | None) -> None:
    """Check every line of JOB against the configuration and the resource's properties; send nothing."""
    config = get_config(config_path)
    scan, problems = asyncio.run(strict_check(job, config, limit=1000))
    for problem in problems:
        click.echo(f"{job}:{problem.message}")
    if scan.invalid > len(problems):
        click.echo(f"... and {scan.invalid - len(problems)} more invalid line(s)")
    click.echo(f"{scan.valid} valid operation(s), {scan.invalid} invalid line(s) in {scan.lines} line(s)")
    sys.exit(EXIT_FAILED if scan.invalid else EXIT_OK)
