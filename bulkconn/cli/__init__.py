"""The command line: the only layer that prints for users and picks exit codes.

One module per command group: :mod:`.run` (``run``, ``validate``), :mod:`.plan` (``plan``), :mod:`.undo`
(``rollback``, ``export``), :mod:`.auth` (``auth``, ``login``),
:mod:`.report` (``report``), :mod:`.emulator` (``emulator``), :mod:`.demo` (``demo``); :mod:`.common` holds
the shared options, messages and exit codes, :mod:`.display` the progress display and summary table,
:mod:`.problems` how problems and next commands are written.

Exit codes: see :mod:`.common` and docs/command-line.md.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Mapping
from types import ModuleType

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
    "run": (
        "bulkconn.cli.run",
        "run",
        "Apply the changes listed in JOB (JSON Lines or CSV) and write a JSONL report.",
    ),
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
        "Write the current objects as a job skeleton: one line (or CSV row) per object with its writable values.",
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

PROG = "bulkconn"
ENV_PREFIX = "BULKCONN"


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from bulkconn.logs import enable_debug_logging

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


def import_without_collector(module: str) -> ModuleType:
    """Import ``module`` with the cyclic garbage collector paused, then freeze what is alive and restore the collector.

    A command's module brings in nearly everything it needs before its first request (aiohttp, msal, the engine):
    tens of thousands of objects that live as long as the process. Imported with the collector running, they are
    walked by dozens of collections as they are created, which free next to nothing; merely paused, they would all
    wait in the youngest generation, for the first collection after the pause to walk at once. Frozen
    (``gc.freeze``), they are out of every later collection's way and the generation counts start again from zero.
    A run gives frozen objects back when it ends (:func:`bulkconn.runner.execute`); the command line freezes the heap
    again as it exits. The benchmarks' start-up scenario loads ``run`` this way.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


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
            command = getattr(import_without_collector(module), attribute)
            self.add_command(command, cmd_name)
            _prepare(cmd_name, command)
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


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX},
)
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


def _prepare(name: str, command: click.Command) -> None:
    """What a command gets when it is loaded: ``--debug`` on each leaf, and its options' environment variables."""
    for path, leaf in _leaves(command, (name,)):
        leaf.params.append(_debug_option())  # `bulkconn run JOB --debug` as well as `bulkconn --debug run JOB`
        _name_environment(path, leaf)


def _every_leaf() -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command, loaded, in the order of :data:`COMMANDS` (for listings of all options; a run loads its own)."""
    leaves = []
    with click.Context(cli) as ctx:
        for name in COMMANDS:
            command = cli.get_command(ctx, name)
            assert command is not None
            leaves += _leaves(command, (name,))
    return leaves


cli.params.insert(0, _debug_option())
_name_environment((), cli)


def option_variables() -> list[tuple[str, str, str]]:
    """(command, option, environment variable) for every option that reads one, as ``--help`` shows them."""
    rows = []
    for path, command in [((), cli), *_every_leaf()]:
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                rows.append((" ".join((PROG, *path)), max(param.opts, key=len), param.envvar))
    return rows


def main() -> None:
    """Console-script entry point (also ``python -m bulkconn``)."""
    try:
        cli(prog_name=PROG)
    finally:
        # The process ends here. The interpreter's exit runs the cyclic collector over everything still alive
        # (every module, a run's configuration and connections): 70 ms of CPU after a run, for memory the exit
        # frees anyway. Frozen objects are out of its reach; files and the report are closed already.
        gc.freeze()
