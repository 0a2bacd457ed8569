"""``bulkconn rollback`` (a ``--backup`` report -> an undo job) and ``bulkconn export`` (objects -> a job skeleton)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from bulkconn.cli.common import EXIT_FAILED, EXIT_OK, config_option, err, get_config, user_errors
from bulkconn.cli.plan import config_file, write_jsonl
from bulkconn.config import Config
from bulkconn.csvout import CsvJobWriter
from bulkconn.errors import UsageError
from bulkconn.jobscan import is_csv
from bulkconn.outputs import check_output, is_stdout, written
from bulkconn.readonly import Exported, export_objects, open_reads
from bulkconn.registry import Kind, Resource
from bulkconn.report.reader import iter_lines, require_report
from bulkconn.rollback import UndoJob, build_undo, writable_properties
from bulkconn.selectors import ALL_TENANTS, DEFAULT_RESOURCE, SelectorProblem, check_where
from bulkconn.suggest import did_you_mean
from bulkconn.targets import resolve_resource

NOT_UNDONE_SHOWN = 20
EXPORT_FORMATS = ("jsonl", "csv")
_TEXT_TYPES = frozenset({"Edm.String", "Edm.Guid", "Edm.DateTimeOffset", "Edm.Date", "Edm.TimeOfDay", "Edm.Duration"})


@click.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The undo job ('-': stdout)."
)
@click.option("--force", is_flag=True, help="Replace an existing output file (never the report or its job).")
@user_errors
def rollback(report: Path, out: Path, force: bool) -> None:
    """Turn REPORT (of a run with --backup) into a job restoring every patched object to its pre-image.

    Run the undo job with `bulkconn run`: an object changed since bulkconn wrote it is left alone (skipped,
    reason Conflict) unless --force.
    """
    recorded = require_report(report).get("job")
    job = Path(recorded) if isinstance(recorded, str) and recorded else None
    inputs = (("the report", report), (f"the job of {report}", job))
    check_output(out, inputs=inputs, what="the undo job", force=force)
    undo = build_undo((record for _, record in iter_lines(report)), source=str(report))
    with written(out, force=force) as sink:
        write_jsonl(sink, undo.lines)
    _say_undo(undo, out)
    sys.exit(EXIT_OK)


def _say_undo(undo: UndoJob, out: Path) -> None:
    click.echo(f"{len(undo.lines)} object(s) to restore ({undo.operations} operation(s)) -> {out}", err=True)
    if undo.unconfirmed:
        click.echo(
            f"{undo.unconfirmed} operation(s) have a pre-image but no result (the run stopped mid-write): "
            "resume that run first for an exact undo",
            err=True,
        )
    if undo.no_undo_needed:
        click.echo(f"{undo.no_undo_needed} backed-up operation(s) failed or were skipped: nothing to undo", err=True)
    if undo.not_undone:
        click.echo(f"{len(undo.not_undone)} operation(s) cannot be undone:", err=True)
        for item in undo.not_undone[:NOT_UNDONE_SHOWN]:
            click.echo(f"  {item.key} ({item.tenant} {item.object_id or '-'}): {item.reason}", err=True)
        if len(undo.not_undone) > NOT_UNDONE_SHOWN:
            click.echo(f"  ... and {len(undo.not_undone) - NOT_UNDONE_SHOWN} more", err=True)


def where_value(collection: Resource, name: str, text: str) -> Any:
    """A ``--where`` value: text for text-like properties (and unknown ones), else JSON (``true``, ``5``, ``null``)."""
    prop = collection.entity_type.properties.get(name)
    if prop is None or prop.type.kind is Kind.ENUM or prop.type.name in _TEXT_TYPES:
        return None if text == "null" else text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # validation below says what is wrong with it


def parse_where(collection: Resource, pairs: tuple[str, ...]) -> Mapping[str, Any]:
    """``PROP=VALUE`` pairs -> a validated ``where`` (every one must match)."""
    where: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--where {pair!r}: expected PROPERTY=VALUE")
        where[name] = where_value(collection, name, text)
    if not where:
        return where
    checked = check_where(where, collection=collection, source="--where")
    if isinstance(checked, SelectorProblem):
        raise UsageError(f"--where: {checked.reason}")
    return checked


def _tenants(config: Config, tenant: str) -> list[str]:
    if tenant == ALL_TENANTS:
        return list(config.tenants)
    if tenant not in config.tenants:
        raise UsageError(f"unknown tenant alias '{tenant}'{did_you_mean(tenant, config.tenants)} (or '*' for every)")
    return [tenant]


async def _export(config: Config, on_line: Callable[[dict[str, Any]], None], **how: Any) -> Exported:
    async with open_reads(config) as reads:
        return await export_objects(reads, on_line=on_line, **how)


def export_format(out: Path, given: str | None) -> str:
    """``--format``, or the one ``-o``'s name implies (``.csv``: csv; else, and stdout, jsonl).

    Raises:
        UsageError: a format that bulkconn would not read back from that file name (jobs are read by extension).
    """
    implied = "csv" if not is_stdout(out) and is_csv(out) else "jsonl"
    if given is None or is_stdout(out) or given == implied:
        return given or implied
    if given == "csv":
        raise UsageError(f"--format csv: bulkconn reads a CSV job only from a file named *.csv, not {out}")
    raise UsageError(f"--format jsonl: {out} would be read back as a CSV job; name it *.jsonl")


def _export_to(sink: BinaryIO, fmt: str, config: Config, collection: Resource, **how: Any) -> Exported:
    """Export into ``sink`` as JSON Lines (line by line) or CSV (all rows at the end: the header needs them)."""
    if fmt == "jsonl":
        return asyncio.run(_export(config, lambda line: write_jsonl(sink, [line]), **how))
    with CsvJobWriter(leading=writable_properties(collection.entity_type)) as table:
        done = asyncio.run(_export(config, table.add, **how))
        table.write(sink)
    return done


@click.command()
@config_option
@click.option("--tenant", default=ALL_TENANTS, show_default=True, help="A tenant alias, or * for every one.")
@click.option("--where", "where_pairs", multiple=True, metavar="PROP=VALUE", help="Only objects where PROP is VALUE.")
@click.option("--resource", default=DEFAULT_RESOURCE, show_default=True, help="The collection to export.")
@click.option(
    "-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The job file ('-': stdout)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    help="jsonl or csv (Excel's CSV UTF-8). Default: csv for -o *.csv, else jsonl.",
)
@click.option("--force", is_flag=True, help="Replace an existing output file (never the configuration).")
@user_errors
def export(
    config_path: Path | None,
    tenant: str,
    where_pairs: tuple[str, ...],
    resource: str,
    out: Path,
    fmt: str | None,
    force: bool,
) -> None:
    """Write the current objects as a job skeleton: one line (or CSV row) per object with its writable values."""
    config = get_config(config_path)
    fmt = export_format(out, fmt)
    check_output(out, inputs=(("the configuration", config_file(config)),), what="the export", force=force)
    collection = resolve_resource(resource)
    where = parse_where(collection, where_pairs)
    tenants = _tenants(config, tenant)
    job_resource = None if resource == DEFAULT_RESOURCE else resource
    with written(out, force=force) as sink:
        done = _export_to(
            sink, fmt, config, collection, tenants=tenants, resource=resource, where=where, job_resource=job_resource
        )
    total = sum(done.objects.values())
    click.echo(f"{total} object(s) from {len(tenants)} tenant(s) -> {out}", err=True)
    for alias, error in sorted(done.failed.items()):
        err(f"tenant {alias}: could not list {collection.path}: {error.code}: {error.message}")
    sys.exit(EXIT_FAILED if done.failed else EXIT_OK)
