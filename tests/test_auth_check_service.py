"""`auth check`: a transient Graph error is retried, and a lasting one is a service error (exit 5), not exit 3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from bulkconn.cli.auth import _read
from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.emulator.options import Faults
from bulkconn.errors import TransportError
from bulkconn.transport import HttpRequest, HttpResponse
from tests.conftest import World


def _world(tmp_path: Path, faults: Faults) -> Iterator[World]:
    # seed 1: the fault dice roll 0.13 then 0.85, so p = 0.5 fails the first read only.
    options = EmulatorOptions(
        tenants=2, connectors_per_tenant=2, time_scale=0.05, seed=1, tenant_faults={"fabrikam": faults}
    )
    with EmulatorThread(options) as emu:
        yield World(emu, tmp_path, ops=2)


@pytest.fixture
def one_500(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, Faults(p500=0.5))


@pytest.fixture
def always_500(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, Faults(p500=1.0))


def test_a_single_graph_500_is_retried_and_the_check_passes(one_500: World) -> None:
    """One injected 500 on fabrikam's read: auth check retries it and exits 0."""
    proc = one_500.bulkconn("auth", "check", "--config", "bulkconn.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert one_500.emu.core.stats.faults_total == 1  # the fault really happened


def test_a_lasting_graph_500_is_a_service_error_not_an_auth_failure(always_500: World) -> None:
    """Graph answering 500 every time: exit 5, the row says service error, never authentication failed."""
    proc = always_500.bulkconn("auth", "check", "--config", "bulkconn.toml")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "service error: Graph answered 500 after retries" in flat
    assert "authentication failed" not in (proc.stdout + proc.stderr).lower()
    assert always_500.emu.core.stats.faults_total == 3  # a 500 gets at most 3 attempts (retry.py)


class ScriptedTransport:
    """Answers from a script: an HttpResponse, or an exception to raise."""

    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.answers = list(answers)
        self.sent = 0

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.sent += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


TENANT: Any = SimpleNamespace(graph_root="https://graph.example/v1.0", ca_bundle=None)


async def test_read_honours_retry_after_on_429() -> None:
    """A 429 with Retry-After: 7 is waited out for exactly 7 s, then the read succeeds."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    transport: Any = ScriptedTransport(HttpResponse(429, {"retry-after": "7"}, b""), HttpResponse(200, {}, b"{}"))
    resp, error = await _read(transport, TENANT, "token", sleep=sleep)
    assert resp is not None and resp.status == 200 and error is None
    assert waits == [7.0]


async def test_read_gives_up_after_its_budget_on_no_answer() -> None:
    """No answer at all (connection reset) four times: the error is returned, not raised, after 4 tries."""

    async def sleep(seconds: float) -> None:
        return None

    transport: Any = ScriptedTransport(*[TransportError("ConnectionReset", "broke")] * 4)
    resp, error = await _read(transport, TENANT, "token", sleep=sleep)
    assert resp is None and error is not None and error.code == "ConnectionReset"
    assert transport.sent == 4


def test_auth_check_checks_every_tenant_and_lists_each_configuration_problem(world: World) -> None:
    """contoso's secret variable is unset: its row says so, fabrikam is still checked (ok); exit 2 (configuration)."""
    text = world.config.read_text()
    start = text.index("[tenants.contoso]")
    line = next(x for x in text[start:].splitlines() if x.startswith("client_secret_file"))
    world.config.write_text(text.replace(line, 'client_secret_env = "BULKCONN_NOT_SET_ANYWHERE"', 1))
    proc = world.bulkconn("auth", "check", "--config", "bulkconn.toml", "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    rows = {row["tenant"]: row for row in orjson.loads(proc.stdout)["tenants"]}
    assert rows["contoso"]["result"] == "config"
    assert "environment variable BULKCONN_NOT_SET_ANYWHERE is not set" in rows["contoso"]["detail"]
    assert rows["fabrikam"]["result"] == "ok"
    assert "tenant 'contoso', key 'client_secret_env'" in proc.stderr
