"""The command line loads a command's modules only when that command runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bulkconn.cli import COMMANDS, cli
from tests.conftest import World
from tests.engine_harness import oid

HEAVY = ("bulkconn.engine", "bulkconn.runner", "bulkconn.emulator", "aiohttp", "msal", "rich", "cryptography")


def _loaded_after(*args: str) -> set[str]:
    """Top-level modules and bulkconn modules imported by ``python -m bulkconn ARGS`` (in a fresh interpreter)."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['bulkconn', *{list(args)!r}]\n"
        "try:\n    runpy.run_module('bulkconn', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('\\n'.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stderr.split())


@pytest.mark.parametrize("args", [("--version",), ("--help",)])
def test_version_and_help_import_no_engine_network_or_display(args: tuple[str, ...]) -> None:
    """`bulkconn --version` and `--help` start without importing the engine, aiohttp, msal, rich or the emulator."""
    loaded = _loaded_after(*args)
    assert not [name for name in HEAVY if name in loaded]


def test_help_lists_every_command_with_its_own_help() -> None:
    """The top-level help lists each command with the first line its own --help shows (no drift)."""
    with click.Context(cli) as ctx:
        for name, (_, _, short) in COMMANDS.items():
            command = cli.get_command(ctx, name)
            assert command is not None
            for limit in (45, 200):
                assert click.Command(name, help=short).get_short_help_str(limit) == command.get_short_help_str(limit)
        assert cli.list_commands(ctx) == sorted(COMMANDS)


def _loaded_by_run_import() -> set[str]:
    """The modules ``bulkconn run`` has imported when its command runs (loaded as the CLI loads it), in a fresh
    interpreter."""
    probe = "import importlib, sys\nimportlib.import_module('bulkconn.cli.run')\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_run_command_imports_nothing_beyond_what_sending_needs() -> None:
    """`bulkconn run` starts sending without importing rich, cryptography, difflib or the emulator."""
    loaded = _loaded_by_run_import()
    assert {"bulkconn.runner", "aiohttp", "msal"} <= loaded
    assert not [name for name in ("rich", "cryptography", "difflib", "bulkconn.emulator") if name in loaded]


# What only some jobs or flags use: selector lines (selectors, listing, expansion, values), reads first (reads,
# precheck), device-code tenants (tokencache), a CSV job (jobcsv), --resume or a report already there (resume,
# report.reader; not the stdlib's glob they use, which coverage imports into every interpreter CI starts), --shard/--shards (shards), --processes (processes, scaleout, merge) and --dry-run or a
# question at a terminal (dryrun, confirm).
ON_DEMAND = (
    "bulkconn.selectors",
    "bulkconn.listing",
    "bulkconn.expansion",
    "bulkconn.values",
    "bulkconn.reads",
    "bulkconn.precheck",
    "bulkconn.tokencache",
    "bulkconn.jobcsv",
    "bulkconn.resume",
    "bulkconn.report.reader",
    "bulkconn.shards",
    "bulkconn.processes",
    "bulkconn.cli.scaleout",
    "bulkconn.merge",
    "bulkconn.dryrun",
    "bulkconn.cli.confirm",
)


def test_run_command_leaves_what_a_job_may_not_use_unimported() -> None:
    """What only some jobs or flags use is not imported before `bulkconn run` knows the job and flags need it."""
    loaded = _loaded_by_run_import()
    assert not [name for name in (*ON_DEMAND, "msal_extensions") if name in loaded]  # msal loads it for an app


@pytest.mark.e2e
def test_a_plain_run_imports_none_of_what_it_does_not_use(world: World) -> None:
    """A plain JSON Lines run, start to end over real sockets, never imports what only other jobs or flags use."""
    at_exit = "import atexit, sys\natexit.register(lambda: print(*sys.modules, sep='\\n', file=sys.stderr))"
    proc = world.start("run", str(world.job), "--config", str(world.config), "--yes", "--quiet", prelude=at_exit)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert (world.dir / "job.report.jsonl").stat().st_size
    loaded = set(stderr.split())
    assert "bulkconn.engine" in loaded  # the list was printed
    assert not [name for name in ON_DEMAND if name in loaded]
    assert "rich" not in loaded  # off a terminal the summary is drawn without it
    assert "bulkconn summary" in stderr and "│ total" in stderr


def test_a_job_without_selector_lines_is_scanned_without_importing_selectors(tmp_path: Path) -> None:
    """Scanning a plain job leaves the selector modules unimported; the first selector line imports them."""
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"tenant": "a", "id": oid(1), "patch": {"version": "2"}}) + "\n")
    selecting = tmp_path / "selecting.jsonl"
    selecting.write_text('{"tenant": "a", "where": {"status": "connected"}, "patch": {"version": "2"}}\n')
    probe = (
        "import sys\nfrom pathlib import Path\nfrom bulkconn.jobscan import scan_job\n"
        "for job in sys.argv[1:]:\n"
        "    scan = scan_job(Path(job), ['a'], on_invalid=print)\n"
        "    print(scan.valid, len(scan.selectors), 'bulkconn.selectors' in sys.modules)\n"
    )
    command = [sys.executable, "-c", probe, str(plain), str(selecting)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["1 0 False", "1 1 True"]


def _probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str = "") -> None:
    """A module that records, as it is imported, whether the cyclic collector runs (gone from sys.modules after)."""
    (tmp_path / f"{name}.py").write_text(f"import gc\nCOLLECTOR_RAN = gc.isenabled()\n{text}", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, name, None)  # so that the test's end removes the module it imported
    del sys.modules[name]


def test_a_command_module_is_imported_with_the_collector_paused_then_frozen_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a command's modules load the collector waits (it would walk them again and again); what they created is
    then frozen, so no collection walks it later, and the collector runs again (one paused by the caller stays
    paused)."""
    import gc

    from bulkconn.cli import import_without_collector

    _probe_module(tmp_path, monkeypatch, "probe_enabled", "KEPT = [[n] for n in range(5000)]\n")
    _probe_module(tmp_path, monkeypatch, "probe_disabled")
    gc.unfreeze()  # what earlier tests froze goes back to the oldest generation
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert import_without_collector("probe_enabled").COLLECTOR_RAN is False
    assert gc.isenabled()
    assert gc.get_freeze_count() > 5000  # the module's objects, out of the collector's way
    assert gc.get_count()[0] < 700  # nothing left waiting for the first collection
    gc.disable()
    try:
        assert import_without_collector("probe_disabled").COLLECTOR_RAN is False
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ModuleNotFoundError):
        import_without_collector("probe_that_does_not_exist")
    assert gc.isenabled()  # restored after a failed import too


def test_the_command_line_loads_commands_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bulkconn run` loads its module the paused way (the start-up benchmark measures that path)."""
    import bulkconn.cli as cli_module

    _probe_module(
        tmp_path, monkeypatch, "probe_command", "import click\n\n@click.command()\ndef hello() -> None:\n    pass\n"
    )
    group = cli_module.LazyGroup(lazy={"hello": ("probe_command", "hello", "Say hello.")})
    with click.Context(group) as ctx:
        assert group.get_command(ctx, "hello") is not None
    assert sys.modules["probe_command"].COLLECTOR_RAN is False
