"""``bulkconn demo``: the emulator in-process, a generated job, a real run with the progress display."""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from bulkconn.cli.common import run_and_report, user_errors
from bulkconn.cli.problems import RunCommands
from bulkconn.config import load_config
from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.model import Status
from bulkconn.runner import RunOptions

SLOWER = "contoso"  # the first tenant the emulator generates
SLOWER_LIMIT = 60


class DemoCommands(RunCommands, frozen=True):
    """The demo's next commands: its emulator stops with it, so its report can be neither resumed nor retried."""

    again: str = ""  # the demo command as it was run

    def next_steps(self, counts: Mapping[str, int], *, interrupted: bool, conflicts: int = 0) -> list[tuple[str, str]]:
        bad = (Status.FAILED, Status.UNCERTAIN, Status.INVALID)
        unfinished = interrupted or conflicts > 0 or any(counts.get(s.value) for s in bad)
        return [("the demo's emulator stopped with it: run the whole demo again", self.again)] if unfinished else []


@click.command()
@click.option(
    "--dir",
    "directory",
    default=Path("bulkconn-demo"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo writes its files.",
)
@click.option("--tenants", default=4, show_default=True, type=click.IntRange(1, 50))
@click.option("--ops", default=3000, show_default=True, type=click.IntRange(1, 200_000))
@click.option("--quiet", "-q", is_flag=True)
@user_errors
def demo(directory: Path, tenants: int, ops: int, quiet: bool) -> None:
    """Run a multi-tenant job against the embedded emulator (20 s throttling windows shrunk to 1 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    report, job, config_file = (
        directory / "demo-report.jsonl",
        directory / "demo-job.jsonl",
        directory / "bulkconn.toml",
    )
    report.unlink(missing_ok=True)
    # The first tenant (always "contoso") really allows fewer writes than its configuration says, so the run
    # shows pacing find a lower limit from the 429s; the others run at Intune's 100 and never see a 429.
    options = EmulatorOptions(
        tenants=tenants,
        connectors_per_tenant=math.ceil(ops / tenants),
        time_scale=0.05,
        seed=2026,
        state_dir=directory / "emulator",
        tenant_limits={SLOWER: {"writes_per_app": SLOWER_LIMIT}},
    )
    # The emulator serves from a background thread with its own event loop; the run uses the main one.
    with EmulatorThread(options) as emu:
        write_config(emu.core, emu.ca_file, config_file)
        write_job(emu.core, job, ops)
        click.echo(f"emulator: {emu.base_url}, {tenants} tenants; job: {job} ({ops} operations)", err=True)
        click.echo(
            "Intune allows 100 writes per 20 s per app per tenant; here that window lasts 1 s. "
            f"Tenant '{SLOWER}' really allows only {SLOWER_LIMIT} while its configuration says 100: "
            "watch its 'paced to' column find the limit from the 429s.",
            err=True,
        )
        code = run_and_report(
            load_config(config_file),
            RunOptions(report=report, drain_timeout_s=2.0),
            DemoCommands(job, report, config_file, again=_again(directory, tenants, ops)),
            quiet=quiet,
        )
        stats = emu.core.stats_json()
    for alias, entry in stats["tenants"].items():
        limit = entry["limits"]["writes_per_app"]
        click.echo(
            f"  {alias}: most writes accepted in one window {entry['max_writes_in_window']}/{limit}, "
            f"429 answers {entry['throttled']}, token requests {entry['token_requests']}",
            err=True,
        )
    for line in next_steps(directory, report):
        click.echo(line, err=True)
    sys.exit(code)


def _again(directory: Path, tenants: int, ops: int) -> str:
    return shlex.join(["bulkconn", "demo", "--dir", str(directory), "--tenants", str(tenants), "--ops", str(ops)])


def next_steps(directory: Path, report: Path) -> list[str]:
    """What to run after the demo: its handover report, then the path to a real run on one's own tenants."""
    return [
        "",
        "next steps:",
        f"  bulkconn report show {report} --format html -o {directory / 'report.html'}   # this run, for a customer",
        "on your own tenants (write bulkconn.toml as docs/configuration.md says; the job as docs/job-format.md says):",
        "  bulkconn auth check --config bulkconn.toml                  # a token and one read per tenant",
        "  bulkconn validate my-job.jsonl --config bulkconn.toml       # every line checked, nothing sent",
        "  bulkconn run my-job.jsonl --config bulkconn.toml --dry-run  # the requests it would send",
        "  bulkconn run my-job.jsonl --config bulkconn.toml            # do it; report in my-job.report.jsonl",
        "  bulkconn report show my-job.report.jsonl --format html -o my-job.html",
    ]
