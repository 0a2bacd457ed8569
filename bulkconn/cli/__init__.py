"""The command line: the only layer that prints for users and picks exit codes.

One module per command group: :mod:`.run` (``run``, ``validate``), :mod:`.plan` (``plan``), :mod:`.undo`
(``rollback``, ``export``), :mod:`.auth` (``auth``, ``login``),
:mod:`.report` (``report``), :mod:`.emulator` (``emulator``), :mod:`.demo` (``demo``); :mod:`.common` holds
the shared options, messages and exit codes, :mod:`.display` the progress display and summary table.

Exit codes (also in the README):
    0    every operation succeeded (or, for validate/dry-run, every line is valid)
    1    some operations failed, were invalid, or are uncertain
    2    usage, configuration or job error found before anything was sent
    3    authentication failed for every tenant (``auth check``: for any tenant)
    4    ``plan``: changes pending (0: nothing to change)
    5    ``auth check``: a lasting service error
    6    ``run --processes``: a shard process crashed; its report is unfinished (resume it)
    130  interrupted (SIGINT/SIGTERM); the report says how to resume
"""

from __future__ import annotations

import click

from bulkconn import __version__
from bulkconn.cli.auth import auth_group, login
from bulkconn.cli.demo import demo
from bulkconn.cli.emulator import emulator_group
from bulkconn.cli.plan import plan
from bulkconn.cli.report import report_group
from bulkconn.cli.run import run, validate
from bulkconn.cli.undo import export, rollback
from bulkconn.logs import enable_debug_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkconn")
@click.option("--debug", is_flag=True, help="Log every request (method, URL, status, ids) to stderr.")
def cli(debug: bool) -> None:
    """bulkconn: fast, safe, resumable bulk changes to Microsoft Graph across many tenants."""
    if debug:
        enable_debug_logging()


for command in (emulator_group, run, validate, plan, export, rollback, auth_group, report_group, login, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()
