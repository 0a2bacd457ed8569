"""Asking before a run on real tenants from a terminal (a real pseudo-terminal), and never otherwise."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

import pytest

from bulkconn.cli.confirm import describe, is_local
from bulkconn.dryrun import RunPlan, TenantPlan
from tests.conftest import World, launch, read_report
from tests.engine_harness import config

# The emulator is on loopback, so bulkconn would not ask; this makes it look like a real tenant's Graph.
NOT_LOCAL = "import bulkconn.cli.confirm as confirm\nconfirm.is_local = lambda tenant: False\n"
RUN = ("run", "job.jsonl", "--config", "bulkconn.toml", "-q")


def _at_terminal(world: World, args: tuple[str, ...], *, answer: bytes | None, prelude: str) -> tuple[int, str]:
    """Run with stdin and stderr on a pseudo-terminal; type ``answer`` when asked. Returns (exit code, screen)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        launch(prelude, *args), stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, cwd=world.dir, env=world.env()
    )
    os.close(slave)
    screen = b""
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if answer is not None and b"Proceed? [y/N]" in screen:
                os.write(master, answer)
                answer = None
        return proc.wait(timeout=60), screen.decode(errors="replace")
    finally:
        os.close(master)


@pytest.mark.e2e
def test_no_at_the_prompt_sends_nothing(world: World) -> None:
    """At a terminal, before real tenants: the plan (tenants, operations, least time) and a question; "n" stops."""
    code, screen = _at_terminal(world, RUN, answer=b"n\n", prelude=NOT_LOCAL)
    assert code == 1, screen
    assert "about to send 40 operation(s) to 2 tenant(s)" in screen
    assert "contoso: 20 operation(s)" in screen and "at least 0.2 s at 100 writes per 1 s" in screen
    assert "at least 0.2 s in all" in screen
    assert "not started: nothing was sent" in screen
    assert not (world.dir / "job.report.jsonl").exists()
    assert world.emu.stats()["writes_total"] == 0


@pytest.mark.e2e
def test_yes_at_the_prompt_or_yes_flag_runs(world: World) -> None:
    """ "y" runs the job; --yes runs it without asking."""
    code, screen = _at_terminal(world, (*RUN, "--report", "a.jsonl"), answer=b"y\n", prelude=NOT_LOCAL)
    assert code == 0, screen
    assert len(read_report(world.dir / "a.jsonl")[1]) == 40
    code, screen = _at_terminal(world, (*RUN, "--report", "b.jsonl", "--yes"), answer=None, prelude=NOT_LOCAL)
    assert code == 0 and "Proceed?" not in screen, screen
    assert len(read_report(world.dir / "b.jsonl")[1]) == 40


@pytest.mark.e2e
def test_no_question_for_the_local_emulator_or_without_a_terminal(world: World) -> None:
    """The emulator on loopback is never asked about; nor is a run whose stdin is not a terminal."""
    code, screen = _at_terminal(world, (*RUN, "--report", "a.jsonl"), answer=None, prelude="")
    assert code == 0 and "Proceed?" not in screen, screen
    piped = subprocess.run(
        launch(NOT_LOCAL, *RUN, "--report", "b.jsonl"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=world.dir,
        env=world.env(),
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0 and "Proceed?" not in piped.stderr, piped.stderr


def test_only_loopback_graph_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1, ::1 and localhost are the emulator on this machine; any other host is a real tenant."""
    urls = {
        "v4": "https://127.0.0.1:8443",
        "v6": "https://[::1]:8443",
        "name": "https://localhost:8443",
        "real": "https://graph.microsoft.com",
        "lookalike": "https://localhost.example.com",
    }
    cfg = config(tmp_path, monkeypatch, {alias: {"graph_url": url} for alias, url in urls.items()})
    assert {alias for alias in urls if is_local(cfg.tenants[alias])} == {"v4", "v6", "name"}


def test_the_plan_shown_names_tenants_operations_and_least_time() -> None:
    """The lines shown before the question: per tenant, then the slowest tenant's least time overall."""
    tenants = tuple(
        TenantPlan(alias, ops, ops, "https://graph.microsoft.com/v1.0/...", minutes, 100, 20.0, ())
        for alias, ops, minutes in (("contoso", 900, 3.5), ("fabrikam", 100, 0.4))
    )
    lines = describe(RunPlan(valid=1000, invalid=2, problems=(), tenants=tenants))
    assert lines[0] == "about to send 1000 operation(s) to 2 tenant(s):"
    assert lines[1].startswith("  contoso: 900 operation(s) to https://graph.microsoft.com/v1.0/..., at least 3.5 min")
    assert lines[3:] == [
        "at least 3.5 min in all (tenants run side by side)",
        "2 invalid line(s) will be reported, not sent",
    ]
