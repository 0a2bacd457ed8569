"""``bulkconn report summary``, ``failed``, ``show`` and ``merge``: reading reports, resumed and sharded ones included.

``summary`` and ``failed`` accept several reports of one job (the shards of a run) and read them as one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.markup import escape
from rich.table import Table

from bulkconn.cli.common import EXIT_OK, user_errors
from bulkconn.cli.console import console as rich_console
from bulkconn.errors import UsageError
from bulkconn.fingerprint import fingerprint
from bulkconn.merge import merge_reports
from bulkconn.outputs import check_output, is_stdout, written
from bulkconn.report.handover import load_handover
from bulkconn.report.reader import (
    check_job,
    combine_states,
    failed_count,
    read_state,
    require_report,
    summarize,
    write_failed_job,
)
from bulkconn.report.show import FORMATS, render

REPORTS = click.argument(
    "reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@click.group(name="report")
def report_group() -> None:
    """Read a run's JSONL report."""


@report_group.command(name="summary")
@REPORTS
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def summary(reports: tuple[Path, ...], as_json: bool) -> None:
    """Counts by status, tenant and error code (latest result per operation), attempts and throttling.

    Several REPORTS of one job (the shard reports of a run) are read as one.
    """
    data = summarize(list(reports))
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        sys.exit(EXIT_OK)
    console = rich_console()
    console.print(
        f"{data['report']}: {data['operations']} operation(s) over {data['runs']} run(s); "
        f"{data['attempts_total']} attempts (max {data['attempts_max']}), "
        f"{data['throttled_total']} throttled; {data['duration_s']:.1f} s of running time, "
        f"{data['started_at']} -> {data['finished_at']}",
        highlight=False,
    )
    table = Table(title="by tenant", title_justify="left")
    statuses = sorted(data["by_status"])
    table.add_column("tenant")
    for status in statuses:
        table.add_column(status, justify="right")
    for tenant, row in data["by_tenant"].items():
        table.add_row(escape(tenant), *(str(row.get(s, 0)) for s in statuses))  # an alias is text, not markup
    table.add_row("[b]total[/b]", *(f"[b]{data['by_status'][s]}[/b]" for s in statuses))
    console.print(table)
    for code, count in data["by_error_code"].items():
        console.print(f"  error {code}: {count}", highlight=False)
    for code, count in data["by_skip_reason"].items():
        console.print(f"  skipped {code}: {count}", highlight=False)
    sys.exit(EXIT_OK)


@report_group.command(name="failed")
@REPORTS
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the job of failed operations ('-': standard output).",
)
@click.option(
    "--job",
    "job_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The original job (default: the path recorded in the report).",
)
@click.option("--include-uncertain", is_flag=True, help="Also include syncs whose outcome is uncertain.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output file, and accept a job file that changed since the report was written.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def failed(
    reports: tuple[Path, ...], output: Path, job_path: Path | None, include_uncertain: bool, force: bool, as_json: bool
) -> None:
    """Write a job of the operations whose latest result is 'failed', ready to run (from one or several REPORTS).

    An existing OUTPUT is replaced only with --force, and never when it is one of the reports or their job.
    """
    if as_json and is_stdout(output):
        raise UsageError("--json and -o - would both write to standard output; write the job to a file")
    state = combine_states([read_state(report) for report in reports])
    job = job_path or Path(str(state.header.get("job", "")))
    if not job.is_file():
        raise click.UsageError(f"the original job {job} is not there; pass --job PATH")
    inputs = [*(("the report", report) for report in reports), (f"the job of {reports[0]}", job)]
    check_output(output, inputs=inputs, what="the failed operations", force=force)
    job_print = fingerprint(job)
    check_job(state, job_print.sha256, job_print.size, job_print.lines, force=force)
    if not failed_count(state, include_uncertain=include_uncertain):
        what = "failed or uncertain" if include_uncertain else "failed"
        said = f"nothing {what} in {', '.join(map(str, reports))}; {output} was not written"
        click.echo(said, err=as_json or is_stdout(output))
        if as_json:
            click.echo(orjson.dumps({"job": None, "operations": 0}).decode())
        sys.exit(EXIT_OK)
    with written(output, force=force) as sink:
        count = write_failed_job(state, job, sink, include_uncertain=include_uncertain)
    if as_json:
        click.echo(orjson.dumps({"job": str(output), "operations": count}).decode())
    elif is_stdout(output):
        click.echo(f"{count} failed operation(s) from {job} written to standard output", err=True)
    else:
        click.echo(f"{output}: {count} failed operation(s) from {job}; run it with: bulkconn run {output}")
    sys.exit(EXIT_OK)


def echo_in_chunks(text: str, chunk: int = 1 << 16) -> None:
    """Write ``text`` to stdout a pipe's worth at a time.

    One write of a megabyte to a pipe whose reader leaves early (``| head -1``) can end as a short write that
    reports no error; a write after the reader left always fails, and the CLI exits 141.
    """
    for start in range(0, len(text), chunk):
        click.echo(text[start : start + chunk], nl=False)


@report_group.command(name="show")
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="md",
    show_default=True,
    help="md for a ticket or an email, html for a self-contained page, csv for one row per operation.",
)
@click.option("--tenant", "tenants", multiple=True, metavar="ALIAS", help="Only this tenant (repeat for more).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output (never the report or its job).",
)
@click.option(
    "--job",
    "job_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The original job, for what each operation changed (default: the path recorded in the report).",
)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@user_errors
def show(
    report: Path, fmt: str, tenants: tuple[str, ...], output: Path | None, job_path: Path | None, force: bool
) -> None:
    """A handover report per tenant: what changed, what failed and why, when, how long."""
    handover = load_handover(report, job=job_path, tenants=tenants)
    if output is None or is_stdout(output):
        echo_in_chunks(render(handover, fmt))
        sys.exit(EXIT_OK)
    inputs = (("the report", report), (f"the job of {report}", handover.job))
    check_output(output, inputs=inputs, what="the handover report", force=force)
    # Excel reads a CSV file as UTF-8 only when it starts with a byte order mark.
    encoding = "utf-8-sig" if fmt == "csv" else "utf-8"
    with written(output, force=force) as sink:
        sink.write(render(handover, fmt).encode(encoding))
    click.echo(f"{output}: {fmt} report of {report}", err=True)
    sys.exit(EXIT_OK)


@report_group.command(name="merge")
@REPORTS
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the merged report (replaced atomically).",
)
@click.option("--partial", is_flag=True, help="Merge even if a shard has not finished (the summary says interrupted).")
@click.option("--force", is_flag=True, help="Replace an existing file that is not an earlier merge of this job.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def merge(reports: tuple[Path, ...], output: Path, partial: bool, force: bool, as_json: bool) -> None:
    """Combine the shard reports of one job into one report: one line per operation, one summary.

    Refuses, listing every reason, reports of different jobs, shard counts or partitions, a missing or
    repeated shard, an operation or tenant in two shards, and (unless --partial) an unfinished shard. An
    earlier merge of the same job is replaced (merging again after a resume); any other existing file
    only with --force.
    """
    again = _earlier_merge(output, reports[0])
    check_output(output, inputs=(), what="the merged report", force=force or again)
    result = merge_reports(list(reports), output, partial=partial)
    if as_json:
        body = {
            "report": str(result.output),
            "shards": result.shards,
            "operations": result.operations,
            "counts": result.counts,
            "torn_lines": result.torn_lines,
            "unfinished": list(result.unfinished),
        }
        click.echo(orjson.dumps(body).decode())
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items())) or "no operations"
        click.echo(f"{output}: {result.operations} operation(s) from {result.shards} shard report(s) ({counts})")
        if result.unfinished:
            click.echo(f"shard(s) {', '.join(map(str, result.unfinished))} had not finished: the report is partial")
    sys.exit(EXIT_OK)


def _earlier_merge(output: Path, shard: Path) -> bool:
    """Whether ``output`` is a merged report of the job ``shard`` belongs to (merging again replaces it)."""
    try:
        header, of_shard = require_report(output), require_report(shard)
    except (UsageError, OSError):
        return False
    return "merged" in header and header.get("job_sha256") == of_shard.get("job_sha256")
