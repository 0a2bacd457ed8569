"""Throttling windows, Retry-After forms, fault injection and the `emulator serve` command."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from bulkconn.emulator import Emulator, Faults, RetryAfterFormat
from bulkconn.emulator.throttling import Limits, TenantThrottle
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses


def test_sliding_window_admits_exactly_the_limit() -> None:
    """Pure window logic: 100 writes per app admitted, the 101st waits until the first leaves the window."""
    throttle = TenantThrottle(
        Limits(window_s=20, writes_per_app=100, writes_per_tenant=200, any_per_app=1000, any_per_tenant=2000)
    )
    for i in range(100):
        assert throttle.admit("app", is_write=True, now=i * 0.01) == 0
    wait = throttle.admit("app", is_write=True, now=10.0)
    assert wait == pytest.approx(10.0)
    assert throttle.admit("app", is_write=True, now=20.0001) == 0
    # Another app has its own 100 but shares the tenant-wide 200.
    for i in range(100):
        assert throttle.admit("other", is_write=True, now=20.0002 + i * 1e-6) == 0
    assert throttle.admit("other", is_write=True, now=20.0004) > 0
    assert throttle.admit("third", is_write=True, now=20.0005) > 0  # tenant window holds 200
    assert throttle.stats()["max_writes_in_window"] == 200


async def _burst(emu: Emulator, n: int) -> list[aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu)
        cid = next(iter(tenant(emu, "contoso").connectors.values()))["id"]
        url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{cid}"
        out = []
        for i in range(n):
            async with http.patch(
                url, json={"exchangeAlias": f"a{i}"}, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                await r.read()
                out.append(r)
        return out


async def test_burst_gets_429_with_sensible_retry_after(make_emulator: EmulatorFactory) -> None:
    """110 PATCHes at once: 100 pass, 10 get 429 TooManyRequests with 0 < Retry-After <= 20; no window over 100."""
    emu = await make_emulator()
    responses = await _burst(emu, 110)
    assert [r.status for r in responses].count(200) == 100
    throttled = [r for r in responses if r.status == 429]
    assert len(throttled) == 10
    assert all(0 < int(r.headers["Retry-After"]) <= 20 for r in throttled)
    stats = emu.stats()
    assert stats["throttled_total"] == 10
    assert stats["tenants"]["contoso"]["max_writes_in_window"] == 100


@pytest.mark.parametrize("fmt", list(RetryAfterFormat))
async def test_retry_after_formats(make_emulator: EmulatorFactory, fmt: RetryAfterFormat) -> None:
    """Retry-After as whole seconds, fractional seconds, an HTTP date, or absent."""
    emu = await make_emulator(writes_per_app=1, retry_after=fmt)
    last = (await _burst(emu, 2))[-1]
    assert last.status == 429
    value = last.headers.get("Retry-After")
    if fmt is RetryAfterFormat.ABSENT:
        assert value is None
    elif fmt is RetryAfterFormat.SECONDS:
        assert value is not None and value.isdigit() and 1 <= int(value) <= 20
    elif fmt is RetryAfterFormat.FRACTIONAL:
        assert value is not None and "." in value and 0 < float(value) <= 20
    else:
        assert value is not None
        delta = parsedate_to_datetime(value) - dt.datetime.now(dt.UTC)
        assert 0 < delta.total_seconds() <= 21


async def test_time_scale_shrinks_window_and_retry_after(make_emulator: EmulatorFactory) -> None:
    """At time scale 0.01 the 20 s window lasts 0.2 s: a retry after Retry-After succeeds."""
    emu = await make_emulator(writes_per_app=2, time_scale=0.01)
    responses = await _burst(emu, 3)
    assert responses[-1].status == 429
    retry_after = float(responses[-1].headers["Retry-After"])
    assert 0 < retry_after <= 0.2
    await asyncio.sleep(retry_after)
    assert (await _burst(emu, 1))[0].status == 200


async def test_fault_injection_is_deterministic_under_seed(make_emulator: EmulatorFactory) -> None:
    """Same seed and same requests give the same faults; another seed gives others."""
    faults = Faults(p500=0.15, p503=0.15, p503_bare=0.1, p504=0.1)
    runs = []
    for seed in (3, 3, 4):
        emu = await make_emulator(seed=seed, faults=faults)
        runs.append([r.status for r in await _burst(emu, 40)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {500, 503, 504} <= set(runs[0])
    assert 200 in runs[0]


async def test_503_with_and_without_retry_after(make_emulator: EmulatorFactory) -> None:
    """p503 carries Retry-After, p503_bare does not."""
    emu = await make_emulator(faults=Faults(p503=1.0))
    assert "Retry-After" in (await _burst(emu, 1))[0].headers
    emu = await make_emulator(faults=Faults(p503_bare=1.0))
    response = (await _burst(emu, 1))[0]
    assert response.status == 503 and "Retry-After" not in response.headers


async def test_dropped_connection_and_batch_envelope_429(make_emulator: EmulatorFactory) -> None:
    """p_drop closes the connection without an answer; p_batch_429 throttles a whole $batch envelope."""
    emu = await make_emulator(faults=Faults(p_drop=1.0))
    with pytest.raises(aiohttp.ClientError):
        await _burst(emu, 1)
    emu = await make_emulator(faults=Faults(p_batch_429=1.0))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu)
        payload = {"requests": [{"id": "1", "method": "GET", "url": "/deviceManagement/exchangeConnectors"}]}
        async with http.post(
            f"{emu.base_url}/v1.0/$batch", json=payload, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 429
            assert "Retry-After" in r.headers
    assert emu.stats()["requests_total"] == 0


async def test_per_tenant_faults(make_emulator: EmulatorFactory) -> None:
    """Faults set for one tenant leave the others untouched."""
    emu = await make_emulator(tenant_faults={"contoso": Faults(p500=1.0)})
    assert (await _burst(emu, 1))[0].status == 500
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu, "fabrikam")
        async with http.get(
            f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200


async def test_admin_reset_restores_data_and_counters(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """POST /_emulator/reset puts back the generated data and zeroes the stats."""
    original = dict(next(iter(tenant(emu, "contoso").connectors.values())))
    await _burst(emu, 3)
    async with http.post(f"{emu.base_url}/_emulator/reset") as resp:
        assert resp.status == 200
    async with http.get(f"{emu.base_url}/_emulator/stats") as resp:
        assert (await resp.json())["writes_total"] == 0
    async with http.get(f"{emu.base_url}/_emulator/state") as resp:
        state = await resp.json()
    assert state["tenants"]["contoso"]["exchangeConnectors"][original["id"]] == original
    assert "secrets" not in orjson.dumps(state).decode()


def test_emulator_serve_subprocess(tmp_path: Path) -> None:
    """`bulkconn emulator serve` writes its ready file, config (secrets apart, 0600) and job, and stops on SIGTERM.

    The config and job files exist already: --force replaces them.
    """
    ready, config, job = tmp_path / "ready", tmp_path / "bulkconn.toml", tmp_path / "job.jsonl"
    config.write_text("# an earlier rehearsal\n")
    job.write_text("{}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkconn",
            "emulator",
            "serve",
            "--tenants",
            "2",
            "--connectors-per-tenant",
            "4",
            "--state-dir",
            str(tmp_path / "state"),
            "--ready-file",
            str(ready),
            "--write-config",
            str(config),
            "--write-job",
            str(job),
            "--force",
            "--ops",
            "6",
            "--time-scale",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        base_url = ready.read_text().strip()
        assert base_url.startswith("https://127.0.0.1:")
        text = config.read_text()
        assert "[tenants.contoso]" in text and "client_secret_file" in text and "emu~" not in text
        assert "window_s = 1.0" in text
        secret_files = list((tmp_path / "bulkconn.secrets").iterdir())
        assert len(secret_files) == 2
        assert all(os.stat(f).st_mode & 0o077 == 0 for f in secret_files)
        lines = [orjson.loads(line) for line in job.read_text().splitlines()]
        assert len(lines) == 6 and {line["tenant"] for line in lines} == {"contoso", "fabrikam"}
        # The written configuration and job work unchanged with `bulkconn run` (the rehearsal path).
        run = subprocess.run(
            [sys.executable, "-m", "bulkconn", "run", str(job), "--config", str(config), "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "emulator stopped" in out


async def test_read_windows_throttle_gets_too(make_emulator: EmulatorFactory) -> None:
    """The 'any request' window applies to reads: with 5 allowed per app, the 6th GET is a 429."""
    emu = await make_emulator(any_per_app=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu)
        statuses = []
        for _ in range(6):
            async with http.get(
                f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                statuses.append(r.status)
    assert statuses == [200] * 5 + [429]
    assert emu.stats()["tenants"]["contoso"]["max_requests_in_window"] == 5
