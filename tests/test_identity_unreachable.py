"""An identity service that cannot be reached is not a refused credential: retried, said plainly, exit 5."""

from __future__ import annotations

import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from bulkconn.auth import MsalTokenProvider, unreachable
from bulkconn.cli.common import EXIT_AUTH, EXIT_SERVICE, exit_code
from bulkconn.config import parse_config
from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.errors import IDENTITY_UNREACHABLE, IdentityUnreachable
from bulkconn.runner import RunResult
from tests.conftest import World


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, port: int) -> MsalTokenProvider:
    monkeypatch.setenv("BULKCONN_TEST_SECRET", "not-a-real-secret")
    text = f"""
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "BULKCONN_TEST_SECRET"
authority_host = "https://127.0.0.1:{port}"
graph_url = "https://127.0.0.1:{port}"
[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
"""
    return MsalTokenProvider(parse_config(text, file="test.toml", base=tmp_path))


async def test_a_refused_connection_is_retried_with_backoff_then_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Connection refused: 3 attempts, 1 s then 2 s apart; the error names the host and the reason, not a credential."""
    port = _closed_port()
    provider = _provider(monkeypatch, tmp_path, port)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    provider._sleep = sleep
    with pytest.raises(IdentityUnreachable) as caught:
        await provider.token("contoso")
    provider.close()
    assert waits == [1.0, 2.0]
    error = caught.value
    assert error.code == IDENTITY_UNREACHABLE and error.attempts == 3
    assert f"cannot reach the identity service at 127.0.0.1:{port}" in error.describe()
    assert "connection refused" in error.describe() and "authentication failed" not in error.describe()


def _wrapped(cause: BaseException, kind: type[requests.RequestException]) -> requests.RequestException:
    exc = kind("HTTPSConnectionPool(...): Max retries exceeded")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "reason", "transient"),
    [
        (_wrapped(socket.gaierror(-2, "Name or service not known"), requests.ConnectionError), "DNS", True),
        (_wrapped(ConnectionRefusedError(111, "refused"), requests.ConnectionError), "connection refused", True),
        (requests.exceptions.ConnectTimeout("slow"), "no answer", True),
        (_wrapped(ssl.SSLCertVerificationError(1, "verify failed"), requests.exceptions.SSLError), "ca_bundle", False),
    ],
)
def test_each_way_of_not_reaching_identity_has_its_reason(exc: Exception, reason: str, transient: bool) -> None:
    """DNS, refused, timeout are retried; an untrusted certificate is not (it fails the same way every time)."""
    error = unreachable("contoso", "https://login.example.com", exc, timeout_s=30)
    assert reason in error.reason and error.transient is transient
    assert error.host == "login.example.com"


def test_run_exit_code_when_no_tenant_reached_identity() -> None:
    """No tenant reached identity: exit 5; if any tenant's credentials were refused: exit 3."""
    result = RunResult(report=Path("r.jsonl"), tenants=2)
    result.auth_failures = {"contoso": "identity_unreachable: x", "fabrikam": "identity_unreachable: y"}
    result.identity_unreachable = ["contoso", "fabrikam"]
    assert exit_code(result) == EXIT_SERVICE
    result.auth_failures["fabrikam"] = "invalid_client: AADSTS7000215"
    result.identity_unreachable = ["contoso"]
    assert exit_code(result) == EXIT_AUTH


@pytest.fixture
def stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A configuration and a job for an emulator that has stopped (its port refuses connections)."""
    monkeypatch.setattr("bulkconn.auth.CONNECT_BACKOFF_S", 0.0)  # the retries, without waiting
    options = EmulatorOptions(tenants=2, connectors_per_tenant=3, time_scale=0.05, state_dir=tmp_path / "state")
    with EmulatorThread(options) as emu:
        world = World(emu, tmp_path, ops=6)
    yield world


@pytest.mark.e2e
def test_auth_check_with_identity_unreachable_is_a_service_error(stopped: World) -> None:
    """Emulator stopped: auth check exits 5, each row says it cannot reach the identity service; never 'auth'."""
    proc = stopped.bulkconn("auth", "check", "--config", "bulkconn.toml", "--json")
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    rows = orjson.loads(proc.stdout)["tenants"]
    assert {row["result"] for row in rows} == {"service"}
    assert all("cannot reach the identity service at 127.0.0.1:" in row["detail"] for row in rows)
    assert all("3 attempts" in row["detail"] for row in rows)


@pytest.mark.e2e
def test_run_with_identity_unreachable_says_so_once_per_tenant(stopped: World) -> None:
    """Emulator stopped: run exits 5; the terminal says 'cannot reach' once per tenant; each operation has its line."""
    proc = stopped.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--yes")
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    assert "authentication failed" not in proc.stderr
    assert proc.stderr.count("cannot reach the identity service at 127.0.0.1:") == 2
    results = [orjson.loads(line) for line in (stopped.dir / "job.report.jsonl").read_bytes().splitlines()]
    failed = [r for r in results if r.get("type") == "result"]
    assert Counter(r["error"]["code"] for r in failed) == Counter({IDENTITY_UNREACHABLE: 6})


@pytest.mark.e2e
def test_a_refused_secret_is_said_once_per_tenant(tmp_path: Path) -> None:
    """Wrong secrets: Entra's long AADSTS message shows once per tenant on the terminal, not once per operation."""
    with EmulatorThread(EmulatorOptions(tenants=2, connectors_per_tenant=10, time_scale=0.05)) as emu:
        world = World(emu, tmp_path, ops=20)
        for secret in (world.dir / "bulkconn.secrets").iterdir():
            secret.write_text("wrong\n")
        proc = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--yes", "--json")
    assert proc.returncode == EXIT_AUTH, proc.stderr
    assert proc.stderr.count("AADSTS") == 2, proc.stderr
    assert "... and" not in proc.stderr  # no operation is left out of the terminal's account
    assert orjson.loads(proc.stdout)["not_sent"] == {"contoso": 10, "fabrikam": 10}
    results = [orjson.loads(line) for line in (world.dir / "job.report.jsonl").read_bytes().splitlines()]
    assert sum(1 for r in results if r.get("type") == "result" and r["status"] == "failed") == 20
