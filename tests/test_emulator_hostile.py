"""Hostile answers on the wire: the bytes each fault mode sends over real TLS, and whether the request took effect."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest

from bulkconn.emulator import Emulator, Faults, SilentServer
from bulkconn.emulator.hostile import NOT_JSON, PROXY_502
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant
from tests.emulator_helpers import post_batch


async def _token(emu: Emulator, alias: str = "contoso") -> str:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        return await get_token(http, emu, alias)


def _connector(emu: Emulator, alias: str = "contoso") -> dict[str, Any]:
    return dict(next(iter(tenant(emu, alias).connectors.values())))


async def _raw(emu: Emulator, method: str, path: str, token: str, body: Any = None) -> tuple[bytes, bytes]:
    """Send one HTTP/1.1 request over TLS and read every byte until the server closes: (head, body)."""
    host, port = emu.base_url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_context(emu))
    payload = b"" if body is None else orjson.dumps(body)
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass  # an abrupt close is one of the answers under test; what arrived before it is what counts
    writer.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def _header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


async def _patch_raw(emu: Emulator, faults: Faults) -> tuple[bytes, bytes, dict[str, Any]]:
    """PATCH one connector with the given faults on every tenant; return the bytes and the object afterwards."""
    token = await _token(emu)
    emu.core.options = _with_faults(emu, faults)
    cid = _connector(emu)["id"]
    head, body = await _raw(
        emu, "PATCH", f"/v1.0/deviceManagement/exchangeConnectors/{cid}", token, {"exchangeAlias": "x9"}
    )
    return head, body, emu.state()["tenants"]["contoso"]["exchangeConnectors"][cid]


def _with_faults(emu: Emulator, faults: Faults) -> Any:
    return replace(emu.core.options, faults=faults)


async def test_html_502_from_a_proxy_changes_nothing(make_emulator: EmulatorFactory) -> None:
    """p_html_502: a 502 text/html page as nginx writes it, no Graph headers, and the PATCH did not happen."""
    emu = await make_emulator()
    head, body, entity = await _patch_raw(emu, Faults(p_html_502=1.0))
    assert head.startswith(b"HTTP/1.1 502 ")
    assert _header(head, "Content-Type") == "text/html"
    assert _header(head, "request-id") is None
    assert body == PROXY_502
    assert entity["exchangeAlias"] != "x9"
    assert emu.stats()["faults"] == {"html_502": 1} and emu.stats()["writes_total"] == 0


async def test_not_json_body_after_the_write(make_emulator: EmulatorFactory) -> None:
    """p_not_json: 200 labelled application/json whose body does not parse; the PATCH did happen."""
    emu = await make_emulator()
    head, body, entity = await _patch_raw(emu, Faults(p_not_json=1.0))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert _header(head, "Content-Type") == "application/json"
    assert body == NOT_JSON
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert entity["exchangeAlias"] == "x9"


async def test_truncated_body_declares_more_than_it_sends(make_emulator: EmulatorFactory) -> None:
    """p_truncated: Content-Length is 100 bytes more than the whole answer; half of it arrives, then the close."""
    emu = await make_emulator()
    head, body, entity = await _patch_raw(emu, Faults(p_truncated=1.0))
    assert head.startswith(b"HTTP/1.1 200 ")
    declared = int(_header(head, "Content-Length") or 0)
    whole = len(orjson.dumps(entity))
    assert declared == whole + 100
    assert 0 < len(body) < declared
    assert entity["exchangeAlias"] == "x9"


async def test_truncated_sync_answer_still_declares_a_body(make_emulator: EmulatorFactory) -> None:
    """A 204 answer (sync) truncated becomes a 200 whose declared body never fully arrives."""
    emu = await make_emulator(faults=Faults(p_truncated=1.0))
    token = await _token(emu)
    cid = _connector(emu)["id"]
    head, body = await _raw(
        emu, "POST", f"/v1.0/deviceManagement/exchangeConnectors/{cid}/sync", token, {"syncType": "fullSync"}
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) < int(_header(head, "Content-Length") or 0)
    assert emu.stats()["tenants"]["contoso"]["syncs"] == {cid: 1}


async def test_huge_body_is_valid_json_of_the_size_asked(make_emulator: EmulatorFactory) -> None:
    """p_huge: a 200 whose JSON body is exactly huge_body_bytes long (50 MB by default)."""
    assert Faults().huge_body_bytes == 50 * 1024 * 1024
    emu = await make_emulator(faults=Faults(p_huge=1.0, huge_body_bytes=3_000_001))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu)
        async with http.get(
            f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200 and r.content_length == 3_000_001
            body = await r.read()
    assert len(body) == 3_000_001
    assert orjson.loads(body)["value"] == []


async def test_stall_sends_headers_then_nothing(make_emulator: EmulatorFactory) -> None:
    """p_stall: status and headers with a Content-Length, then no body byte before the server gives up (stall_s)."""
    emu = await make_emulator()
    head, body, entity = await _patch_raw(emu, Faults(p_stall=1.0, stall_s=0.3))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert int(_header(head, "Content-Length") or 0) > 0
    assert body == b""
    assert entity["exchangeAlias"] == "x9"


async def test_silent_answer_sends_no_byte(make_emulator: EmulatorFactory) -> None:
    """p_silent: the request is read, not a byte comes back, and it had no effect."""
    emu = await make_emulator()
    head, body, entity = await _patch_raw(emu, Faults(p_silent=1.0, stall_s=0.3))
    assert (head, body) == (b"", b"")
    assert entity["exchangeAlias"] != "x9"
    assert emu.stats()["faults"] == {"silent": 1}


async def test_silent_server_never_completes_the_tls_handshake() -> None:
    """SilentServer accepts the TCP connection and says nothing: a TLS handshake cannot finish."""
    async with SilentServer() as silent:
        host, port = silent.url.removeprefix("https://").rsplit(":", 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ssl.create_default_context()), 0.3)
        assert silent.accepted == 1


@pytest.mark.parametrize(
    ("faults", "location_start", "status"),
    [
        (Faults(p_redirect_offhost=1.0), "https://evil.invalid/v1.0/deviceManagement/exchangeConnectors/", 307),
        (Faults(p_redirect_samehost=1.0, redirect_status=302), "", 302),
    ],
)
async def test_redirects_change_nothing(
    make_emulator: EmulatorFactory, faults: Faults, location_start: str, status: int
) -> None:
    """p_redirect_offhost / p_redirect_samehost: a 3xx with Location (path and query kept); the PATCH did not happen."""
    emu = await make_emulator()
    head, _, entity = await _patch_raw(emu, faults)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    location = _header(head, "Location") or ""
    assert location.startswith(location_start or emu.base_url + "/v1.0/deviceManagement/exchangeConnectors/")
    assert location.endswith(entity["id"])
    assert entity["exchangeAlias"] != "x9"


async def _batch(emu: Emulator, faults: Faults, n: int = 3) -> list[dict[str, Any]]:
    emu.core.options = _with_faults(emu, faults)
    requests = [
        {"id": str(i), "method": "GET", "url": "/deviceManagement/exchangeConnectors?$top=1"} for i in range(1, n + 1)
    ]
    return await post_batch(emu, requests)


async def test_batch_id_faults(make_emulator: EmulatorFactory) -> None:
    """Each $batch fault breaks exactly one thing: a missing, extra, duplicated or unknown id, or a missing status."""
    emu = await make_emulator()
    asked = {"1", "2", "3"}
    missing = await _batch(emu, Faults(p_batch_missing_id=1.0))
    assert len(missing) == 2 and {i["id"] for i in missing} < asked
    extra = await _batch(emu, Faults(p_batch_extra_id=1.0))
    assert [i["id"] for i in extra].count("4") == 1 and {i["id"] for i in extra} == asked | {"4"}
    duplicate = await _batch(emu, Faults(p_batch_duplicate_id=1.0))
    ids = [i["id"] for i in duplicate]
    twice = next(x for x in ids if ids.count(x) == 2)
    assert sorted(i["status"] for i in duplicate if i["id"] == twice) == [200, 500]
    unknown = await _batch(emu, Faults(p_batch_unknown_id=1.0))
    assert len(unknown) == 3 and len({i["id"] for i in unknown} & asked) == 2 and "4" in {i["id"] for i in unknown}
    no_status = await _batch(emu, Faults(p_batch_no_status=1.0))
    assert sum("status" not in i for i in no_status) == 1 and {i["id"] for i in no_status} == asked
    assert emu.stats()["faults"] == {
        "batch_missing_id": 1,
        "batch_extra_id": 1,
        "batch_duplicate_id": 1,
        "batch_unknown_id": 1,
        "batch_no_status": 1,
    }


async def test_hostile_faults_per_tenant(make_emulator: EmulatorFactory) -> None:
    """A hostile fault set for one tenant leaves the other tenant's answers intact."""
    emu = await make_emulator(tenant_faults={"contoso": Faults(p_not_json=1.0)})
    for alias, expected in (("contoso", NOT_JSON), ("fabrikam", None)):
        token = await _token(emu, alias)
        head, body = await _raw(emu, "GET", "/v1.0/deviceManagement/exchangeConnectors", token)
        assert head.startswith(b"HTTP/1.1 200 ")
        if expected is None:
            assert orjson.loads(body)["value"]
        else:
            assert body == expected


async def test_hostile_faults_are_deterministic_under_seed(make_emulator: EmulatorFactory) -> None:
    """The same seed and requests give the same sequence of hostile answers."""
    faults = Faults(p_not_json=0.3, p_html_502=0.3)
    runs = []
    for _ in range(2):
        emu = await make_emulator(seed=7, faults=faults)
        token = await _token(emu)
        runs.append(
            [(await _raw(emu, "GET", "/v1.0/deviceManagement/exchangeConnectors", token))[0][:12] for _ in range(12)]
        )
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 2  # both 200 and 502 occurred
