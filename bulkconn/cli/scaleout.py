"""``run --processes N`` (the shards of a job as child processes), ``validate --shards N``, the global share.

The orchestration is :mod:`bulkconn.processes`; this module starts it with the user's options, shows one
display for all shards, and says how the run ended: merged, interrupted, or with a crashed shard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

import click

from bulkconn.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_SHARD_CRASHED,
    EXIT_USAGE,
    Final,
    default_report,
    echo_json,
    err,
    exit_code_for,
    no_tenant_exit_code,
    print_summary,
    run_json,
)
from bulkconn.cli.display import Display
from bulkconn.cli.problems import RunCommands
from bulkconn.errors import UsageError
from bulkconn.jobscan import JobScan
from bulkconn.lock import ReportLock
from bulkconn.processes import ProcessesResult, ShardRun, run_shards, shard_commands, shard_reports
from bulkconn.shards import ShardSpec, operation_counts, partition

# `run` options that concern the parent only: the children get their own shard, report and display.
PARENT_ONLY = frozenset({"report_path", "processes", "shard", "shards", "dry_run", "quiet", "progress_jsonl"})
ENV_RUN = "BULKCONN_RUN"  # the prefix of `run`'s option variables (docs/command-line.md)
WARNING = "bulkconn: warning:"  # every child repeats the configuration's warnings: show them once


def _passthrough(ctx: click.Context) -> list[str]:
    """The options the user gave ``run`` (defaults included), as a child's command line."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in PARENT_ONLY or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if param.is_flag:
            args += [param.opts[0]] if value else []
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: the parent's, without the ``run`` options' variables.

    The parent resolved those already and passes every option on the child's command line; left in place,
    ``BULKCONN_RUN_PROCESSES`` would make each child start children of its own.
    """
    return {k: v for k, v in environ.items() if not k.startswith(f"{ENV_RUN}_")}


def run_processes(ctx: click.Context, job: Path, count: int, *, spec: ShardSpec | None, quiet: bool) -> int:
    """Run ``count`` shards of ``job`` as child processes; merge their reports when every one finished."""
    if spec is not None:
        raise UsageError(f"--processes starts every shard itself; it does not go with {spec.source}")
    merged = ctx.params["report_path"] or default_report(job)
    with ReportLock(merged):  # each child locks its own shard report; this keeps other runs off the merged one
        return _run_children(ctx, job, count, merged, quiet=quiet)


def _run_children(ctx: click.Context, job: Path, count: int, merged: Path, *, quiet: bool) -> int:
    params = ctx.params
    if not params["resume"]:
        for path in (merged, *shard_reports(merged, count)):
            if path.exists() and path.stat().st_size:
                raise UsageError(f"{path}: report already exists; pass --report NEW, or resume with --resume")
    # --debug is eager and not a parameter value: that it took effect shows in the logging setup it made.
    root = ["--debug"] if logging.getLogger("bulkconn").isEnabledFor(logging.DEBUG) else []
    children = shard_commands(job, merged, count, options=_passthrough(ctx), prefix=root)
    flags = tuple(
        flag for flag, name in (("--skip-unchanged", "skip_unchanged"), ("--backup", "backup")) if params[name]
    )
    commands = RunCommands(job, merged, params["config_path"], ("--processes", str(count), *flags))
    display = Display(quiet=quiet)
    shown: set[str] = set()

    def relay(shard: ShardSpec, text: str) -> None:
        if text.startswith(WARNING):
            if text not in shown:
                shown.add(text)
                display.message(text)
        else:
            display.message(f"[shard {shard}] {text}")

    try:
        env = child_environment(os.environ)
        outcome = asyncio.run(run_shards(children, env=env, on_tick=display.update, on_message=relay))
    finally:
        display.close()
    return _conclude(outcome, commands, as_json=bool(params.get("as_json")))


def _how(run: ShardRun) -> str:
    code = run.returncode or 0
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}" + (f": {run.last_error}" if run.last_error else "")


def _unfinished(outcome: ProcessesResult, commands: RunCommands, *, as_json: bool) -> int:
    """Interrupted, or a shard crashed: the summary, each crashed shard's own resume command, no merge."""
    result = outcome.combined(commands.report)
    crashed = outcome.of_state("crashed")
    code = EXIT_INTERRUPTED if outcome.interrupted else EXIT_SHARD_CRASHED
    print_summary(result, commands, Final.of_run(result))
    for run in crashed:
        spec, report = run.command.spec, run.command.report
        alone = RunCommands(commands.job, report, commands.config, commands.kept[2:], shard=str(spec))
        err(f"shard {spec} crashed ({_how(run)}); resume it alone with:\n  {alone.resume}")
    if crashed:
        err(f"the reports are not merged; resume every unfinished shard and merge them with:\n  {commands.resume}")
    if as_json:
        echo_json(run_json(result, commands, Final.of_run(result), code))
    return code


def _conclude(outcome: ProcessesResult, commands: RunCommands, *, as_json: bool = False) -> int:
    """Say how the shards ended; merge their reports when all of them finished."""
    refused = outcome.of_state("refused")
    if refused:
        err(f"shard(s) {', '.join(str(r.command.spec) for r in refused)} refused to run (the reason is above)")
        return EXIT_USAGE
    if outcome.interrupted or outcome.of_state("crashed"):
        return _unfinished(outcome, commands, as_json=as_json)
    from bulkconn.merge import merge_reports  # after the shards ran: --processes only

    merge = merge_reports([run.command.report for run in outcome.runs], commands.report)
    result = outcome.combined(commands.report)
    final = Final.of_report(commands.report)  # the whole job, earlier runs of each shard included
    code = no_tenant_exit_code(result) or exit_code_for(final.counts, final.conflicts)
    print_summary(result, commands, final)
    click.echo(
        f"merged {merge.shards} shard report(s), {merge.operations} operation(s), into {commands.report}", err=True
    )
    if as_json:
        echo_json(run_json(result, commands, final, code))
    return code


def print_partition(scan: JobScan, count: int) -> None:
    """``validate --shards N``: tenants and operations per shard, as every shard will compute it."""
    plan = partition(operation_counts(scan), count, job_sha256=scan.sha256)
    click.echo(f"{count} shard(s), partition {plan.fingerprint[:12]}... (recorded in each shard's report header):")
    for index, (names, operations) in enumerate(zip(plan.tenants, plan.operations, strict=True)):
        click.echo(f"  shard {index}/{count}: {operations} operation(s), {len(names)} tenant(s)")
        if names:
            click.echo(f"    {', '.join(names)}")
    if scan.invalid:
        click.echo("  invalid lines are recorded by the shard of their tenant (shard 0 when it has none)")
