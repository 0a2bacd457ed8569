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
    130  interrupted (SIGINT/SIGTERM); the report says how to resume
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click
from click.formatting import HelpFormatter

from bulkconn import __version__

# name -> (module, attribute, first paragraph of the command's help). A command's module is imported when the
# command runs (or asks for its own --help), so `bulkconn --version` and `bulkconn --help` load neither the
# engine nor aiohttp, msal, rich or the emulator. tests/test_cli_lazy.py checks the help texts against the commands.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "emulator": (
        "bulkconn.cli.emulator",
        "emulator_group",
        "The local Microsoft Graph + Entra ID emulator (for rehearsals, tests and the demo).",
    ),
    "run": ("bulkconn.cli.run", "run", "Apply the changes listed in JOB (JSON Lines) and write a JSONL report."),
    "validate": (
        "bulkconn.cli.run",
        "validate",
        "Check every line of JOB against the configuration and the resource's properties; send nothing.",
    ),
    "plan": (
        "bulkconn.cli.plan",
        "plan",
        "Read every object JOB targets and show what would change; write nothing to Graph.",
    ),
    "export": (
        "bulkconn.cli.undo",
        "export",
        "Write the current objects as a job skeleton: one line per object with its writable values.",
    ),
    "rollback": (
        "bulkconn.cli.undo",
        "rollback",
        "Turn REPORT (of a run with --backup) into a job restoring every patched object to its pre-image.",
    ),
    "auth": ("bulkconn.cli.auth", "auth_group", "Credentials and permissions."),
    "report": ("bulkconn.cli.report", "report_group", "Read a run's JSONL report."),
    "login": (
        "bulkconn.cli.auth",
        "login",
        'Sign in to TENANT with the device-code flow (for tenants with auth = "device-code").',
    ),
    "demo": (
        "bulkconn.cli.demo",
        "demo",
        "Run a multi-tenant job against the embedded emulator (20 s throttling windows shrunk to 1 s).",
    ),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use; its help lists them from ``lazy`` without importing."""

    def __init__(self, *args: object, lazy: Mapping[str, tuple[str, str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute, _ = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                rows.append((name, click.Command(name, help=self.lazy[name][2]).get_short_help_str(limit)))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkconn")
@click.option("--debug", is_flag=True, help="Log every request (method, URL, status, ids) to stderr.")
def cli(debug: bool) -> None:
    """bulkconn: fast, safe, resumable bulk changes to Microsoft Graph across many tenants."""
    if debug:
        from bulkconn.logs import enable_debug_logging

        enable_debug_logging()


def main() -> None:
    """Console-script entry point."""
    cli()
