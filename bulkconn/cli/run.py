"""``bulkconn run`` and ``bulkconn validate``: option parsing and rendering only; the run itself is the runner's.

Option defaults are read from the settings dataclasses (:class:`EngineSettings`, :class:`RetryPolicy`,
:class:`RunOptions`), so that they are stated once.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from msgspec.structs import replace

from bulkconn.batching import MAX_BATCH
from bulkconn.childpipe import PROGRESS_FLAG, stop_when_parent_dies
from bulkconn.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    default_report,
    echo_json,
    err,
    get_config,
    json_option,
    run_and_report,
    user_errors,
)
from bulkconn.cli.display import least_time
from bulkconn.cli.problems import SHOWN, RunCommands, echo_problems, invalid_json, invalid_line
from bulkconn.config import Config
from bulkconn.engine import EngineSettings
from bulkconn.engine.reading import ReadFirst
from bulkconn.errors import UsageError
from bulkconn.jobscan import JobScan
from bulkconn.lock import ReportLock
from bulkconn.retry import RetryPolicy
from bulkconn.runner import RunOptions, strict_check
from bulkconn.shardenv import MAX_SHARDS, asks_for_shard, process_share

if TYPE_CHECKING:  # imported when a run is sharded, resumed, asks first or is a dry run: a plain run needs none
    from bulkconn.dryrun import RunPlan
    from bulkconn.shards import ShardSpec

ENGINE = EngineSettings()
POLICY = RetryPolicy()
DRAIN_TIMEOUT_S = RunOptions(report=Path()).drain_timeout_s
JSON_PROBLEMS = 1000  # invalid lines listed by `validate --json` (the text output shows the first SHOWN)
MAX_PROCESSES = 256


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
@click.option("--strict", is_flag=True, help="Refuse the whole job if any line is invalid.")
@click.option("--dry-run", is_flag=True, help="Validate and plan; send no write at all.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option(
    "--max-attempts",
    default=POLICY.max_attempts,
    show_default=True,
    type=click.IntRange(1, 1000),
    help=f"Sends per operation before giving up (at most {POLICY.max_attempts_500} of them answered 500).",
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
    help="Resend a sync (or another action that is not idempotent) whose earlier attempt may have reached the service.",
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
    "--resend-uncertain",
    is_flag=True,
    help="With --resume: resend syncs and other non-idempotent actions that may have been sent before a stop.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite objects changed since bulkconn wrote them (undo lines with 'expect'); with --resume also "
    "those the report left alone (Conflict), and accept a job file that changed since the report began.",
)
@click.option(
    "--skip-unchanged",
    is_flag=True,
    help="Read each object first; do not send a patch it already satisfies (skipped, reason Unchanged).",
)
@click.option(
    "--backup",
    is_flag=True,
    help="Record each object's pre-image in the report before patching it (needed by `bulkconn rollback`).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing tenants (asked only at a terminal).")
@json_option
@click.option(
    "--shard",
    metavar="K/N",
    help="Run only the tenants of shard K of N (K = 0..N-1); also $BULKCONN_SHARD. Report: JOB.shard-K-of-N.report.jsonl.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, MAX_SHARDS),
    help="The number of shards, the index K coming from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) "
    "or $BULKCONN_SHARD=K.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_PROCESSES),
    help="Run N shards as child processes on this machine, with one display, and merge their reports.",
)
@click.option(
    "--global-share",
    type=click.FloatRange(0, 1, min_open=True),
    help="Part of Graph's per-app limit across all tenants (130,000 requests per 10 s) this job may use, "
    "all its shards together; each shard paces to its part. Default 0.9 when sharded.",
)
@click.option(PROGRESS_FLAG, "progress_jsonl", is_flag=True, hidden=True)  # a --processes child (processes.py)
@user_errors
def run(
    job: Path,
    config_path: Path | None,
    report_path: Path | None,
    batch_size: int,
    concurrency: int,
    tenant_concurrency: int | None,
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
    skip_unchanged: bool,
    backup: bool,
    yes: bool,
    as_json: bool,
    shard: str | None,
    shards: int | None,
    processes: int | None,
    global_share: float | None,
    progress_jsonl: bool,
) -> None:
    """Apply the changes listed in JOB (JSON Lines or CSV) and write a JSONL report."""
    config = get_config(config_path, read_secrets=not dry_run)  # a dry run sends nothing, so needs no secret
    if not job.is_file():
        raise UsageError(f"{job}: job file not found")
    if dry_run:
        sys.exit(asyncio.run(_dry_run(job, config, batch_size, as_json)))
    if not resume and (retry_failed or recheck_invalid or resend_uncertain):
        raise UsageError("--retry-failed, --recheck-invalid and --resend-uncertain go with --resume")
    spec = _shard(shard, shards)
    if processes is not None:
        from bulkconn.cli.scaleout import run_processes

        _ask_or_stop(yes, job, config, batch_size, RunOptions(report=Path()))
        sys.exit(run_processes(click.get_current_context(), job, processes, spec=spec, quiet=quiet))
    if progress_jsonl:
        stop_when_parent_dies(sys.stdin.fileno())
    report = report_path or _default_report(job, spec)
    settings = EngineSettings(
        batch_size=batch_size,
        concurrency=concurrency,
        tenant_concurrency=tenant_concurrency,
        policy=RetryPolicy(
            max_attempts=max_attempts,
            time_budget_s=time_budget,
            backoff_base_s=backoff_base,
            backoff_cap_s=backoff_cap,
            retry_uncertain_sync=retry_uncertain_sync,
        ),
        read_first=ReadFirst(skip_unchanged=skip_unchanged, backup=backup, force=force),
        global_share=process_share(spec, global_share),
    )
    options = RunOptions(report=report, settings=settings, strict=strict, drain_timeout_s=drain_timeout, shard=spec)
    kept = tuple(flag for flag, on in (("--skip-unchanged", skip_unchanged), ("--backup", backup)) if on)
    commands = RunCommands(job, report, config_path, kept, shard=str(spec) if spec else "")
    # One run per report: held from before the report is read (a resume plans from it) until the run ends.
    with ReportLock(report) as lock:
        resume = resume and _report_to_resume(report, spec)
        if not resume and report.exists() and report.stat().st_size:
            raise UsageError(f"{report}: report already exists; pass --report NEW, or resume it with --resume")
        on_scanned: Callable[[JobScan], None] = lambda scan: None  # noqa: E731
        if resume:
            from bulkconn.resume import plan_resume

            resume_plan = plan_resume(
                job,
                report,
                retry_failed=retry_failed,
                recheck_invalid=recheck_invalid,
                resend_uncertain=resend_uncertain,
                force=force,
            )
            options = replace(
                options,
                skip_keys=resume_plan.skip_keys,
                resumed=True,
                prefill=resume_plan.prefill,
                expansion=resume_plan.expansion,
                resume_header=resume_plan.header,
                resumed_state=resume_plan.state,
            )

            def say_what_is_left(scan: JobScan) -> None:
                click.echo(resume_plan.starting(scan.operations + scan.invalid + scan.unexpanded()), err=True)

            on_scanned = say_what_is_left
        _ask_or_stop(yes, job, config, batch_size, options)
        code = run_and_report(
            config,
            options,
            commands,
            quiet=quiet,
            as_json=as_json,
            on_scanned=on_scanned,
            lock=lock,
            child=progress_jsonl,
        )
    sys.exit(code)


def _report_to_resume(report: Path, spec: ShardSpec | None) -> bool:
    """``--resume`` with no report yet starts the run (a scheduler restarts work with one command).

    Refused when reports of the same job split into another number of shards lie next to it: starting
    afresh would run their tenants again.
    """
    if report.exists() and report.stat().st_size:
        return True
    from bulkconn.resume import refuse_stray_shards

    refuse_stray_shards(report, spec)
    click.echo(f"no report at {report} yet: starting the run", err=True)
    return False


def _shard(shard: str | None, shards: int | None) -> ShardSpec | None:
    """The shard this process runs, from the flags and the environment; ``None`` (the usual case) unsharded."""
    if not asks_for_shard(shard=shard, shards=shards, environ=os.environ):
        return None
    from bulkconn.shards import resolve_shard

    return resolve_shard(shard=shard, shards=shards, environ=os.environ)


def _default_report(job: Path, spec: ShardSpec | None) -> Path:
    if spec is None:
        return default_report(job)
    from bulkconn.shards import shard_report_path

    return shard_report_path(job, spec)


def _ask_or_stop(yes: bool, job: Path, config: Config, batch_size: int, options: RunOptions) -> None:
    """Exit 1, having sent nothing, when a person at a terminal says no (``--yes`` does not ask)."""
    if not yes and not _agreed(job, config, batch_size, options):
        err("not started: nothing was sent")
        sys.exit(EXIT_FAILED)


def _agreed(job: Path, config: Config, batch_size: int, options: RunOptions) -> bool:
    """True unless a person at a terminal, shown what will happen to real tenants, says no."""
    if not sys.stdin.isatty():
        return True  # scripts, schedulers and pipes proceed as always (the quick check first: no scan)
    from bulkconn.cli.confirm import confirmed, should_ask
    from bulkconn.dryrun import plan

    the_plan = asyncio.run(plan(job, config, batch_size=batch_size, skip_keys=options.skip_keys))
    if not the_plan.tenants or not should_ask(config, (t.alias for t in the_plan.tenants)):
        return True
    return confirmed(the_plan)


def _plan_json(job: Path, the_plan: RunPlan) -> dict[str, Any]:
    return {
        "job": str(job),
        "valid": the_plan.valid,
        "invalid": the_plan.invalid,
        "problems": [invalid_json(p) for p in the_plan.problems],
        "tenants": [asdict(t) for t in the_plan.tenants],
    }


async def _dry_run(job: Path, config: Config, batch_size: int, as_json: bool) -> int:
    from bulkconn.dryrun import plan

    the_plan = await plan(job, config, batch_size=batch_size)
    echo_problems((invalid_line(job, p) for p in the_plan.problems), the_plan.invalid)
    if as_json:
        echo_json(_plan_json(job, the_plan))
        return EXIT_FAILED if the_plan.invalid else EXIT_OK
    click.echo(
        f"dry run: {the_plan.valid} valid operation(s), {the_plan.invalid} invalid line(s); nothing will be sent."
    )
    for tenant in the_plan.tenants:
        click.echo(
            f"  {tenant.alias}: {tenant.operations} operation(s) in {tenant.requests} request(s) to {tenant.endpoint}; "
            f"{least_time(tenant.min_minutes)} at {tenant.writes_per_window} writes per {tenant.window_s:g} s"
        )
        for req in tenant.examples:
            click.echo(f"    line {req.line}: {req.method} {req.url} {orjson.dumps(req.body).decode()}")
    return EXIT_FAILED if the_plan.invalid else EXIT_OK


@click.command()
@click.argument("job", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@json_option
@click.option(
    "--shards",
    type=click.IntRange(1, MAX_SHARDS),
    help="Also print how N shards would split the job: tenants and operations per shard.",
)
@user_errors
def validate(job: Path, config_path: Path | None, as_json: bool, shards: int | None) -> None:
    """Check every line of JOB against the configuration and the resource's properties; send nothing.

    Secrets are not read (nothing is sent), so a job can be checked where the credentials are not.
    """
    config = get_config(config_path, read_secrets=False)
    limit = JSON_PROBLEMS if as_json else SHOWN
    scan, problems = asyncio.run(strict_check(job, config, limit=limit, positions=False))
    echo_problems((invalid_line(job, p) for p in problems), scan.invalid)
    summary = f"{scan.valid} valid operation(s), {scan.invalid} invalid line(s) in {scan.lines} line(s)"
    if as_json:
        click.echo(summary, err=True)
        echo_json(
            {
                "job": str(job),
                "lines": scan.lines,
                "valid": scan.valid,
                "invalid": scan.invalid,
                "problems": [invalid_json(p) for p in problems],
                "more": scan.invalid - len(problems),
            }
        )
    else:
        click.echo(summary)
        if shards is not None:
            from bulkconn.cli.scaleout import print_partition

            print_partition(scan, shards)
    sys.exit(EXIT_FAILED if scan.invalid else EXIT_OK)
