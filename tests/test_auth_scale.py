"""Tokens for many tenants: acquisitions overlap instead of queueing, and each tenant asks exactly once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bulkconn.auth import TOKEN_THREADS, MsalTokenProvider
from bulkconn.config import CLOUDS, Config, Secret, SecretCredential, TenantConfig
from tests.conftest import Rehearsal

TENANTS = 40  # more than asyncio's default executor runs at once on most machines (min(32, CPUs + 4))


def _config(tenants: int) -> Config:
    cloud = CLOUDS["global"]
    return Config(
        source="test",
        tenants={
            f"t{n}": TenantConfig(
                alias=f"t{n}",
                tenant_id=f"tenant-{n}",
                client_id="app",
                credential=SecretCredential(Secret("s"), "test"),
                cloud=cloud,
                graph_url=cloud.graph_url,
                authority_host=cloud.authority_host,
                scope=cloud.scope,
            )
            for n in range(tenants)
        },
    )


async def test_token_acquisitions_for_many_tenants_overlap() -> None:
    """40 tenants' blocking MSAL calls are all in flight at once (a small thread pool would never meet)."""
    assert TOKEN_THREADS >= TENANTS
    provider = MsalTokenProvider(_config(TENANTS))
    everyone = threading.Barrier(TENANTS, timeout=5)

    def acquire(tenant: TenantConfig) -> str:
        everyone.wait()  # raises BrokenBarrierError unless every tenant's call runs at the same time
        return f"token-{tenant.alias}"

    provider._acquire = acquire  # type: ignore[method-assign]
    try:
        tokens = await asyncio.gather(*(provider.token(f"t{n}") for n in range(TENANTS)))
    finally:
        provider.close()
    assert tokens == [f"token-t{n}" for n in range(TENANTS)]


async def test_waiting_workers_reuse_the_token_fetched_meanwhile() -> None:
    """Workers of one tenant that queue behind its lock take the token just fetched: one acquisition, no thread hop."""
    provider = MsalTokenProvider(_config(1))
    calls: list[str] = []

    def acquire(tenant: TenantConfig) -> str:
        calls.append(tenant.alias)
        provider._issued[tenant.alias] = "token"
        provider._fresh_until[tenant.alias] = float("inf")
        return "token"

    provider._acquire = acquire  # type: ignore[method-assign]
    try:
        tokens = await asyncio.gather(*(provider.token("t0") for _ in range(8)))
    finally:
        provider.close()
    assert tokens == ["token"] * 8 and calls == ["t0"]


@pytest.mark.e2e
async def test_many_tenants_one_token_request_each_over_one_session(
    rehearsal: Callable[..., Awaitable[Rehearsal]], tmp_path: Path
) -> None:
    """30 tenants whose token answers take 300 ms: one request per tenant, several in flight at once."""
    r = await rehearsal(tenants=30, connectors_per_tenant=2, token_latency_ms=300)
    aliases = sorted(r.emu.stats()["token_requests"])
    result = await r.run(r.job(r.patch_all(aliases, lambda alias, c: {"exchangeAlias": f"{alias}-{c['id'][:6]}"})))
    assert result.counts["succeeded"] == 60
    stats = r.emu.stats()
    assert set(stats["token_requests"].values()) == {1}
    assert stats["max_concurrent_token_requests"] > 1
