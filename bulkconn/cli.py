"""The command line: the only module that prints for users and picks exit codes.

Exit codes (documented in the README):
    0    every operation succeeded
    1    some operations failed or were invalid
    2    usage, configuration or job error found before anything was sent
    3    authentication failed for every tenant
    130  interrupted (SIGINT/SIGTERM)
"""

from __future__ import annotations

import click

from bulkconn import __version__
from bulkconn.cli_emulator import emulator_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkconn")
def cli() -> None:
    """bulkconn: fast, safe, resumable bulk changes to Microsoft Graph across many tenants."""


cli.add_command(emulator_group)


def main() -> None:
    """Console-script entry point."""
    cli()
