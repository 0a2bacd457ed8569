"""The command line as a user meets it: real subprocesses against an emulator in a background thread."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli, main
from tests.conftest import World, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses


def test_run_succeeds_with_exit_0_and_summary(world: World) -> None:
    """`python -m bulkconn run` applies the job, prints a summary table and the report path, exits 0."""
    proc = world.bulkconn("run", str(world.job), "--config", str(world.config), "--quiet", subprocess=True)
    assert proc.returncode == 0, proc.stderr
    assert "bulkconn summary" in proc.stderr and "report:" in proc.stderr
    _, results, summary = read_report(world.dir / "job.report.jsonl")
    assert len(results) == 40 and summary["counts"] == {"succeeded": 40}


def test_strict_and_dry_run_send_nothing(world: World) -> None:
    """--strict with a bad line exits 2; --dry-run prints the plan; the emulator sees no write at all."""
    bad = world.dir / "bad.jsonl"
    bad.write_bytes(world.job.read_bytes() + b'{"tenant": "contoso", "id": "x1", "patch": {"status": "nope"}}\n')
    strict = world.bulkconn("run", str(bad), "--config", str(world.config), "--strict")
    assert strict.returncode == 2
    assert f"{bad}:41: property 'status'" in strict.stderr
    assert not (world.dir / "bad.report.jsonl").exists()
    dry = world.bulkconn("run", str(world.job), "--config", str(world.config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "nothing will be sent" in dry.stdout and "PATCH /deviceManagement/exchangeConnectors/" in dry.stdout
    assert world.emu.stats()["writes_total"] == 0
    assert world.emu.stats()["requests_total"] == 0


def test_validate_names_file_and_line(world: World) -> None:
    """`bulkconn validate` lists each bad line on stderr as FILE:LINE: problem, exits 1; a clean job exits 0."""
    bad = world.dir / "bad.jsonl"
    bad.write_text('{"tenant": "contoso", "id": "abc", "patch": {"exchangeConnectorType": "cloud"}}\n{oops\n')
    proc = world.bulkconn("validate", str(bad), "--config", str(world.config))
    assert proc.returncode == 1
    assert f"{bad}:1: property 'exchangeConnectorType'" in proc.stderr
    assert f"{bad}:2: malformed JSON" in proc.stderr
    assert world.bulkconn("validate", str(world.job), "--config", str(world.config)).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.jsonl", "--config", "bulkconn.toml"], "job file not found"),
        (["run", "job.jsonl", "--config", "nope.toml"], "configuration file not found"),
        (["run", "job.jsonl", "--config", "bulkconn.toml", "--batch-size", "21"], "21 is not in the range"),
        (
            ["run", "job.jsonl", "--config", "bulkconn.toml", "--report", "job.jsonl/r.jsonl"],
            "cannot create the lock file",
        ),
    ],
)
def test_usage_errors_exit_2_without_traceback(world: World, args: list[str], message: str) -> None:
    """The user's own mistakes: one clear line, exit code 2, no Python traceback."""
    proc = world.bulkconn(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_report_is_not_overwritten(world: World) -> None:
    """Running again onto an existing report is refused and says how to resume."""
    (world.dir / "job.report.jsonl").write_text('{"type": "header"}\n')
    proc = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml")
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (world.dir / "job.report.jsonl").read_text() == '{"type": "header"}\n'


def test_exit_1_on_failures_and_3_when_every_tenant_fails_auth(world: World) -> None:
    """A failed operation gives exit 1; wrong secrets for every tenant give exit 3."""
    job = world.dir / "one-bad.jsonl"
    job.write_bytes(world.job.read_bytes() + b'{"tenant": "contoso", "id": "no-such-id", "patch": {"version": "1"}}\n')
    assert world.bulkconn("run", str(job), "--config", "bulkconn.toml", "-q").returncode == 1
    for secret in (world.dir / "bulkconn.secrets").iterdir():
        secret.write_text("wrong\n")
    proc = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--report", "r2.jsonl")
    assert proc.returncode == 3
    assert "quarantined" in proc.stderr and "invalid_client" in proc.stderr


def test_no_secret_or_token_in_output_logs_or_report(world: World) -> None:
    """With --debug, neither a client secret nor any JWT appears on stdout, stderr or in the report."""
    secrets = [p.read_text().strip() for p in (world.dir / "bulkconn.secrets").iterdir()]
    for secret_file in (world.dir / "bulkconn.secrets").iterdir():
        if secret_file.name.startswith("fabrikam"):
            secret_file.write_text("wrong-" + secrets[0] + "\n")  # an auth failure path too
    proc = world.bulkconn("--debug", "run", "job.jsonl", "--config", "bulkconn.toml", "-q", subprocess=True)
    assert "GET" in proc.stderr or "POST" in proc.stderr  # debug logging really ran
    everything = proc.stdout + proc.stderr + (world.dir / "job.report.jsonl").read_text()
    for secret in secrets:
        assert secret not in everything
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", everything)
    assert "Bearer " not in everything


def test_auth_check_table_and_exit_code(world: World) -> None:
    """`auth check` prints one row per tenant; a wrong secret is named and the exit code is 3."""
    ok = world.bulkconn("auth", "check", "--config", "bulkconn.toml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok") >= 2
    (world.dir / "bulkconn.secrets" / "fabrikam.secret").write_text("wrong\n")
    bad = world.bulkconn("auth", "check", "--config", "bulkconn.toml")
    assert bad.returncode == 3
    assert "invalid_client" in bad.stdout and "fabrikam" in bad.stdout


def test_device_code_login_then_run(world: World) -> None:
    """A tenant with auth = "device-code": `bulkconn login` signs in, the cache is 0600, runs use it silently."""
    tenant = next(t for t in world.emu.core.world.tenants.values() if t.alias == "contoso")
    cli_app = next(a for a in tenant.apps.values() if a.public_client)
    text = world.config.read_text()
    head = text.split("[tenants.")[0]
    cache = world.dir / "tokens" / "contoso.json"
    world.config.write_text(
        head + f'[tenants.contoso]\ntenant_id = "{tenant.tenant_id}"\nclient_id = "{cli_app.client_id}"\n'
        f'auth = "device-code"\ntoken_cache_file = "{cache}"\n'
    )
    login = world.bulkconn("login", "contoso", "--config", "bulkconn.toml")
    assert login.returncode == 0, login.stderr
    assert "enter the code" in login.stderr and "signed in to contoso" in login.stdout
    assert cache.exists() and os.stat(cache).st_mode & 0o077 == 0
    lines = [orjson.loads(x) for x in world.job.read_bytes().splitlines()]
    job = world.dir / "contoso.jsonl"
    job.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines if x["tenant"] == "contoso"))
    run = world.bulkconn("run", str(job), "--config", "bulkconn.toml", "-q")
    assert run.returncode == 0, run.stderr


def test_demo_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    """`bulkconn demo` needs no configuration, runs its job on the embedded emulator, exits 0, and says what next."""
    proc = CliRunner().invoke(
        cli, ["demo", "--dir", str(tmp_path / "demo"), "--ops", "300", "--tenants", "3"], catch_exceptions=False
    )
    assert proc.exit_code == 0, proc.stderr
    assert "bulkconn summary" in proc.stderr and "429 answers" in proc.stderr
    _, results, summary = read_report(tmp_path / "demo" / "demo-report.jsonl")
    assert len(results) == 300 and summary["counts"] == {"succeeded": 300}
    steps = proc.stderr.split("next steps:", 1)[1].splitlines()
    assert [s.split()[1:3] for s in steps if s.startswith("  bulkconn")][1:] == [
        ["auth", "check"], ["validate", "my-job.jsonl"], ["run", "my-job.jsonl"], ["run", "my-job.jsonl"],
        ["report", "show"],
    ]  # fmt: skip
    show = steps[1].split("#")[0].split()[1:]  # the first step, this run's handover report, works as printed
    assert CliRunner().invoke(cli, show).exit_code == 0 and (tmp_path / "demo" / "report.html").is_file()


def test_auth_check_names_unknown_tenant_and_missing_permission(world: World) -> None:
    """`auth check` says which tenant is unknown and which app lacks the write permission."""
    fabrikam = next(t for t in world.emu.core.world.tenants.values() if t.alias == "fabrikam")
    reader = next(a for a in fabrikam.apps.values() if a.display_name == "bulkconn-readonly")
    lines = []
    section = ""
    for line in world.config.read_text().splitlines():
        section = line if line.startswith("[") else section
        if section == "[tenants.contoso]" and line.startswith("tenant_id"):
            line = 'tenant_id = "99999999-9999-9999-9999-999999999999"'
        if section == "[tenants.fabrikam]" and line.startswith("client_id"):
            line = f'client_id = "{reader.client_id}"'
        lines.append(line)
    world.config.write_text("\n".join(lines) + "\n")
    (world.dir / "bulkconn.secrets" / "fabrikam.secret").write_text(reader.secrets[0])
    proc = world.bulkconn("auth", "check", "--config", "bulkconn.toml")
    assert proc.returncode == 3
    flat = " ".join(proc.stdout.split())
    assert "invalid_tenant" in flat and "99999999-9999-9999-9999-999999999999" in flat
    assert "no write permission" in flat


@pytest.mark.e2e
def test_an_interrupted_demo_offers_the_demo_again_not_a_resume(tmp_path: Path) -> None:
    """Ctrl-C during the demo: exit 130, and the next command is the demo itself (its emulator is gone), no --resume."""
    report = tmp_path / "d" / "demo-report.jsonl"
    args = ["demo", "--dir", str(tmp_path / "d"), "--tenants", "2", "--ops", "3000", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkconn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while not report.exists() or report.stat().st_size < 20_000:  # some results written; bounded by the timeout
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" not in err and "--retry-failed" not in err
    assert f"bulkconn demo --dir {tmp_path / 'd'} --tenants 2 --ops 3000" in err


def test_the_entry_point_leaves_the_heap_to_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a command ends, ``main`` freezes what is alive, so the interpreter's exit does not collect it (tens of
    milliseconds of CPU after every run); the exit code is the command's."""
    monkeypatch.setattr(sys, "argv", ["bulkconn", "--version"])
    try:
        with pytest.raises(SystemExit) as ended:
            main()
        assert ended.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
