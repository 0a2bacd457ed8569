"""``bulkconn plan``: what a job would change, per tenant and object, without writing anything.

Exit codes (``docs/selectors-plan-rollback.md``): 0 nothing to change, 4 changes pending, 1 some objects do not
exist or could not be read or some lines are invalid, 2 usage error (as for every command).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from bulkconn.cli.common import config_option, get_config, user_errors
from bulkconn.config import Config
from bulkconn.errors import UsageError
from bulkconn.outputs import check_output, written
from bulkconn.plan import PlanCounts, PlanEntry, entry_record, render_text, summary_record
from bulkconn.readonly import JobPlan, make_plan, open_reads


def write_jsonl(sink: BinaryIO, records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        sink.write(orjson.dumps(record) + b"\n")


async def _plan(job: Path, config: Config) -> JobPlan:
    async with open_reads(config) as reads:
        return await make_plan(job, config, reads)


@click.command()
@click.argument("job", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the plan as JSON Lines (one record per operation, then a summary).",
)
@click.option("--force", is_flag=True, help="Replace an existing --out file (never the job or the configuration).")
@user_errors
def plan(job: Path, config_path: Path | None, out: Path | None, force: bool) -> None:
    """Read every object JOB targets and show what would change; write nothing to Graph.

    Exit code 0: nothing to change; 4: changes pending; 1: objects missing, unreadable, or invalid lines.
    """
    config = get_config(config_path)
    if not job.is_file():
        raise UsageError(f"{job}: job file not found")
    if out is not None:
        inputs = (("the job", job), ("the configuration", config_file(config)))
        check_output(out, inputs=inputs, what="the plan", force=force)
    the_plan = asyncio.run(_plan(job, config))
    counts = PlanCounts()
    for line in render_text(the_plan.entries, counts):
        click.echo(line)
    if out is not None:
        _write_out(out, the_plan.entries, counts, force=force)
    sys.exit(counts.exit_code())


def config_file(config: Config) -> Path | None:
    """The configuration's file, when it came from one (an output must never replace it)."""
    path = Path(config.source)
    return path if path.is_file() else None


def _write_out(out: Path, entries: list[PlanEntry], counts: PlanCounts, *, force: bool) -> None:
    with written(out, force=force) as sink:
        write_jsonl(sink, (entry_record(e) for e in entries))
        write_jsonl(sink, [summary_record(counts)])
