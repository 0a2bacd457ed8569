"""Helpers shared by the emulator tests: one $batch over TLS, and waiting for `emulator serve` to be ready."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from bulkconn.emulator import Emulator
from tests.conftest import get_token, ssl_context


async def post_batch(emu: Emulator, requests: list[dict[str, Any]], alias: str = "contoso") -> list[dict[str, Any]]:
    """POST one $batch envelope with a fresh token; assert the envelope is a 200 and return its sub-responses."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu, alias)
        async with http.post(
            f"{emu.base_url}/v1.0/$batch", json={"requests": requests}, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200, await r.text()
            return list((await r.json())["responses"])


async def list_statuses(emu: Emulator, alias: str, n: int) -> list[int]:
    """GET the connector list n times with one token of ``alias``; the statuses in order."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu, alias)
        statuses = []
        for _ in range(n):
            async with http.get(
                f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                statuses.append(r.status)
        return statuses


def wait_ready(proc: subprocess.Popen[Any], ready: Path, timeout_s: float = 30) -> str:
    """Wait for a served emulator's ready file (failing if the process ends first); return its base URL."""
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the emulator did not become ready"
        time.sleep(0.05)
    return ready.read_text().strip()
