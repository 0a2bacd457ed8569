"""The command line: the only layer that prints for users and picks exit codes.

One module per command group: :mod:`.run` (``run``, ``validate``), :mod:`.plan` (``plan``), :mod:`.undo`
(``rollback``, ``export``), :mod:`.auth` (``auth``, ``login``),
:mod:`.report` (``report``), :mod:`.emulator` (``emulator``), :mod:`.demo` (``demo``); :mod:`.common` holds
the shared options, messages and exit codes, :mod:`.display` the progress display and summary table,
:mod:`.problems` how problems and next commands are written.

Exit codes: see :mod:`.common` and docs/command-line.md.
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

PROG = "bulkconn"
ENV_PREFIX = "BULKCONN"


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        enable_debug_logging()


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_debug,
        envvar="BULKCONN_DEBUG",
        help="Log every request (method, URL, status, ids) to stderr.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, "-V", "--version", prog_name=PROG)
def cli() -> None:
    """bulkconn: fast, safe, resumable bulk changes to Microsoft Graph across many tenants."""


def _leaves(command: click.Command, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, (*path, name))]
    return [(path, command)]


def _name_environment(path: tuple[str, ...], command: click.Command) -> None:
    """``BULKCONN_<COMMAND>_<OPTION>`` for every option, named after its long flag (docs/command-line.md)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("help", "version"):
            continue
        if param.hidden:  # internal (run --progress-jsonl, between processes): read from no variable
            param.allow_from_autoenv = False
            continue
        if param.envvar is None:
            flag = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
            param.envvar = "_".join((ENV_PREFIX, *(p.upper().replace("-", "_") for p in path), flag))
        param.show_envvar = True
        param.allow_from_autoenv = False  # one name per option: the one set here


for command in (emulator_group, run, validate, plan, export, rollback, auth_group, report_group, login, demo):
    cli.add_command(command)
cli.params.insert(0, _debug_option())
for _, leaf in _leaves(cli, ()):
    leaf.params.append(_debug_option())  # `bulkconn run JOB --debug` as well as `bulkconn --debug run JOB`
for path, command in [((), cli), *_leaves(cli, ())]:
    _name_environment(path, command)


def option_variables() -> list[tuple[str, str, str]]:
    """(command, option, environment variable) for every option that reads one, as ``--help`` shows them."""
    rows = []
    for path, command in [((), cli), *_leaves(cli, ())]:
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                rows.append((" ".join((PROG, *path)), max(param.opts, key=len), param.envvar))
    return rows


def main() -> None:
    """Console-script entry point (also ``python -m bulkconn``)."""
    cli(prog_name=PROG)
