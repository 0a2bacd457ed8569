"""Shared fixtures: an in-process emulator on a real loopback HTTPS socket, and clients that trust it."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from bulkconn.emulator import Emulator, EmulatorOptions
from bulkconn.emulator.state import Tenant

EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with the given options; every one is stopped at the end of the test."""
    started: list[Emulator] = []

    async def start(**options: Any) -> Emulator:
        emu = Emulator(replace(EmulatorOptions(tenants=2, connectors_per_tenant=5), **options))
        await emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        await emu.stop()


@pytest.fixture
async def emu(make_emulator: EmulatorFactory) -> Emulator:
    return await make_emulator()


def ssl_context(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(emu.ca_file))


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as session:
        yield session


def tenant(emu: Emulator, alias: str) -> Tenant:
    return next(t for t in emu.core.world.tenants.values() if t.alias == alias)


async def get_token(
    session: aiohttp.ClientSession, emu: Emulator, alias: str = "contoso", *, app: str = "bulkconn"
) -> str:
    """A client-credentials token over the real token endpoint (form POST, as any OAuth client does)."""
    t = tenant(emu, alias)
    registered = next(a for a in t.apps.values() if a.display_name == app)
    async with session.post(
        f"{emu.base_url}/{t.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": registered.client_id,
            "client_secret": registered.secrets[0],
            "scope": "https://graph.microsoft.com/.default",
        },
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])
