"""Run the real :class:`~bulkconn.engine.Engine` over a :class:`~tests.fakes.FakeTransport` in virtual time.

``run_engine(tmp_path, lines, handler)`` writes ``lines`` as a job, scans it, and runs the engine to the end
on a :class:`~tests.fakes.VirtualTimeLoop`; it returns a :class:`Run` with the outcomes, the requests (with
the virtual time each was sent) and the engine's counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn import retry
from bulkconn.config import Config, TenantConfig, parse_config
from bulkconn.engine import Engine, EngineSettings
from bulkconn.errors import AuthError
from bulkconn.jobscan import scan_job
from bulkconn.model import Operation, Outcome
from bulkconn.pacing import Pacing
from bulkconn.precheck import Backup
from bulkconn.retry import RetryPolicy
from bulkconn.transport import Clock, HttpRequest, HttpResponse
from tests.fakes import FakeTransport, run_virtual, virtual_wall_now

DEFAULTS = """
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "BULKCONN_TEST_SECRET"
"""
GRAPH = "https://graph.microsoft.com/v1.0"
POLICY = RetryPolicy(backoff_base_s=0.5, backoff_cap_s=8.0, max_attempts=10, time_budget_s=900)


def config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, dict[str, Any]] | None = None
) -> Config:
    """Tenants contoso and fabrikam (plus any named in ``overrides``), each with its ``overrides`` settings."""
    monkeypatch.setenv("BULKCONN_TEST_SECRET", "not-a-real-secret")
    tenants = {"contoso": {}, "fabrikam": {}, **(overrides or {})}
    text = DEFAULTS
    for number, (alias, settings) in enumerate(tenants.items(), start=1):
        text += f'\n[tenants.{alias}]\ntenant_id = "00000000-0000-0000-0000-{number:012d}"\n'
        text += "".join(f"{key} = {value!r}\n" for key, value in settings.items())
    return parse_config(text, file="test.toml", base=tmp_path)


def oid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def update(n: int, tenant: str = "contoso", **fields: Any) -> dict[str, Any]:
    return {"tenant": tenant, "id": oid(n), "patch": {"serverName": f"mail{n}.example.com"}, **fields}


def sync(n: int, tenant: str = "contoso") -> dict[str, Any]:
    return {"tenant": tenant, "id": oid(n), "action": "sync", "syncType": "deltaSync"}


class FakeAuth:
    """Tokens ``<tenant>-1``, ``<tenant>-2``... (a new one after each invalidation); some tenants fail."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.issued: dict[str, int] = {}
        self.invalidated: list[tuple[str, str]] = []

    async def token(self, tenant: str) -> str:
        if tenant in self.failing:
            raise AuthError(tenant, "invalid_client", "the secret was refused")
        self.issued.setdefault(tenant, 1)
        return f"{tenant}-{self.issued[tenant]}"

    async def invalidate(self, tenant: str, token: str) -> None:
        self.invalidated.append((tenant, token))
        self.issued[tenant] = self.issued.get(tenant, 1) + 1

    def token_requests(self, tenant: str) -> int:
        return self.issued.get(tenant, 0)


@dataclass
class Run:
    outcomes: list[Outcome]
    requests: list[tuple[float, HttpRequest]]  # (virtual time sent, request)
    engine: Engine
    intents: list[Operation] = field(default_factory=list)
    auth: FakeAuth = field(default_factory=FakeAuth)
    elapsed_s: float = 0.0
    backups: list[tuple[int, Backup]] = field(default_factory=list)  # (requests sent before it, the pre-image)

    def by_line(self) -> dict[int, Outcome]:
        return {o.line: o for o in self.outcomes}

    def only(self) -> Outcome:
        (outcome,) = self.outcomes
        return outcome


def run_engine(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[dict[str, Any]],
    handler: Callable[[HttpRequest], HttpResponse],
    *,
    settings: EngineSettings | None = None,
    auth: FakeAuth | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    during: Callable[[Engine], None] | None = None,
    pacer_factory: Callable[[TenantConfig, Clock], Pacing] | None = None,
    latency: Callable[[], float] | None = None,
) -> Run:
    """Run ``lines`` through the engine with ``handler`` answering; ``during`` is called once the engine runs.

    ``latency`` gives one-way delays (``tests.fakes.jittered``); HTTP-date ``Retry-After`` values are read on the
    virtual wall clock (``tests.fakes.virtual_wall_now``), so every run is the same.
    """
    cfg = config(tmp_path, monkeypatch, overrides)
    monkeypatch.setattr(retry, "wall_now", virtual_wall_now)
    job = tmp_path / "job.jsonl"
    job.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    scan = scan_job(job, list(cfg.tenants), on_invalid=lambda item: pytest.fail(f"invalid test line: {item}"))
    provider = auth or FakeAuth()
    sent: list[tuple[float, HttpRequest]] = []

    def timed(request: HttpRequest) -> HttpResponse:
        sent.append((asyncio.get_running_loop().time(), request))
        return handler(request)

    async def scenario() -> Run:
        outcomes: list[Outcome] = []
        intents: list[Operation] = []
        backups: list[tuple[int, Backup]] = []
        async with FakeTransport(timed, latency=latency) as transport:
            engine = Engine(
                tenants=dict(cfg.tenants),
                auth=provider,
                transport=transport,
                settings=settings or EngineSettings(seed=1, policy=POLICY),
                on_outcome=outcomes.append,
                on_intent=intents.append,
                on_backup=lambda backup: backups.append((len(sent), backup)),
                pacer_factory=pacer_factory,
            )
            if during is not None:
                asyncio.get_running_loop().call_soon(during, engine)
            started = asyncio.get_running_loop().time()
            await engine.run(scan)
            elapsed = asyncio.get_running_loop().time() - started
        return Run(outcomes, sent, engine, intents, provider, elapsed, backups)

    return run_virtual(scenario(), inline_threads=True)  # the job reader's reads: the same order every run
