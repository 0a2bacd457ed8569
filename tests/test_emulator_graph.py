"""The emulator's Graph resource routes over a real HTTPS socket."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bulkconn.emulator import Emulator
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

SEED_ID = "e11c1de8-1de8-e11c-e81d-1ce1e81d1ce1"
SEED_REQUEST = {
    "@odata.type": "#microsoft.graph.deviceManagementExchangeConnector",
    "lastSyncDateTime": "2017-01-01T00:02:49.3205976-08:00",
    "status": "connectionPending",
    "primarySmtpAddress": "Primary Smtp Address value",
    "serverName": "Server Name value",
    "connectorServerName": "Connector Server Name value",
    "exchangeConnectorType": "hosted",
    "version": "Version value",
    "exchangeAlias": "Exchange Alias value",
    "exchangeOrganization": "Exchange Organization value",
}
SEED_RESPONSE = {"@odata.type": SEED_REQUEST["@odata.type"], "id": SEED_ID} | {
    k: v for k, v in SEED_REQUEST.items() if k != "@odata.type"
}


def _seed_world(path: Path) -> Path:
    world = {
        "tenants": [
            {
                "tenant_id": "00000000-0000-0000-0000-000000000001",
                "domain": "contoso.onmicrosoft.com",
                "alias": "contoso",
                "apps": [
                    {
                        "client_id": "11111111-1111-1111-1111-111111111111",
                        "display_name": "bulkconn",
                        "roles": ["DeviceManagementServiceConfig.ReadWrite.All"],
                        "secrets": ["seed-secret"],
                    }
                ],
                "exchangeConnectors": [
                    {
                        "@odata.type": SEED_REQUEST["@odata.type"],
                        "id": SEED_ID,
                        "lastSyncDateTime": "2016-01-01T00:00:00Z",
                        "status": "connected",
                        "primarySmtpAddress": "old@contoso.com",
                        "serverName": "old",
                        "connectorServerName": "old",
                        "exchangeConnectorType": "onPremises",
                        "version": "1",
                        "exchangeAlias": "old",
                        "exchangeOrganization": "old",
                    }
                ],
            }
        ]
    }
    path.write_bytes(orjson.dumps(world))
    return path


async def _session_token(emu: Emulator) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu)))
    token = await get_token(session, emu)
    return session, {"Authorization": f"Bearer {token}"}


async def test_seed_example_patch_round_trips(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """The Exchange Connector update page's example PATCH gets exactly the example response (200, full object)."""
    emu = await make_emulator(world_file=_seed_world(tmp_path / "world.json"))
    session, auth = await _session_token(emu)
    async with session:
        url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{SEED_ID}"
        body = json.dumps(SEED_REQUEST, indent=2)
        async with session.patch(url, data=body, headers=auth | {"Content-type": "application/json"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            assert await resp.json() == SEED_RESPONSE
        async with session.get(url, headers=auth) as resp:
            assert await resp.json() == SEED_RESPONSE


async def test_patch_can_answer_204(make_emulator: EmulatorFactory) -> None:
    """--patch-status 204 answers No Content with an empty body, and the change is applied."""
    emu = await make_emulator(patch_status=204)
    session, auth = await _session_token(emu)
    cid = next(iter(tenant(emu, "contoso").connectors.values()))["id"]
    async with session:
        url = f"{emu.base_url}/beta/deviceManagement/exchangeConnectors/{cid}"
        async with session.patch(url, json={"serverName": "new.contoso.com"}, headers=auth) as resp:
            assert resp.status == 204
            assert await resp.read() == b""
        async with session.get(url, headers=auth) as resp:
            assert (await resp.json())["serverName"] == "new.contoso.com"


async def test_prefer_return_minimal_gives_204(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Prefer: return=minimal makes a PATCH answer 204 even when 200 is the default."""
    auth = {"Authorization": f"Bearer {await get_token(http, emu)}", "Prefer": "return=minimal"}
    cid = next(iter(tenant(emu, "contoso").connectors.values()))["id"]
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{cid}"
    async with http.patch(url, json={"exchangeAlias": "x"}, headers=auth) as resp:
        assert resp.status == 204


BAD_PATCHES: list[tuple[str, Any, dict[str, str], str]] = [
    ("unknown property", {"colour": "red"}, {}, "colour"),
    ("wrong JSON type", {"serverName": 5}, {}, "serverName"),
    ("bad enum", {"status": "online"}, {}, "status"),
    ("enum null", {"exchangeConnectorType": None}, {}, "exchangeConnectorType"),
    ("bad DateTimeOffset", {"lastSyncDateTime": "yesterday"}, {}, "lastSyncDateTime"),
    ("DateTimeOffset without offset", {"lastSyncDateTime": "2020-01-01T00:00:00"}, {}, "lastSyncDateTime"),
    ("changed id", {"id": "00000000-0000-0000-0000-000000000000"}, {}, "id"),
    ("wrong @odata.type", {"@odata.type": "#microsoft.graph.user"}, {}, "@odata.type"),
    ("non-object body", [1, 2], {}, "object"),
    ("non-JSON body", "{not json", {}, "JSON"),
    ("missing Content-Type", {"serverName": "a"}, {"Content-Type": ""}, "Content-Type"),
    ("wrong Content-Type", {"serverName": "a"}, {"Content-Type": "text/plain"}, "text/plain"),
]


@pytest.mark.parametrize(("case", "body", "headers", "mentions"), BAD_PATCHES, ids=[c[0] for c in BAD_PATCHES])
async def test_invalid_patch_is_400_with_odata_error(
    emu: Emulator, http: aiohttp.ClientSession, case: str, body: Any, headers: dict[str, str], mentions: str
) -> None:
    """Each kind of bad PATCH gets 400 with an OData error naming the problem, and changes nothing."""
    auth = {"Authorization": f"Bearer {await get_token(http, emu)}", "client-request-id": "my-crid"}
    entity = next(iter(tenant(emu, "contoso").connectors.values()))
    before = dict(entity)
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    send_headers = auth | {"Content-Type": "application/json"} | headers
    if send_headers.get("Content-Type") == "":
        del send_headers["Content-Type"]
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{entity['id']}"
    async with http.patch(url, data=raw, headers=send_headers, skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 400, case
        error = (await resp.json())["error"]
    assert error["code"] == "BadRequest"
    assert mentions in error["message"]
    assert error["innerError"]["client-request-id"] == "my-crid"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", error["innerError"]["date"])
    assert error["innerError"]["request-id"] == resp.headers["request-id"]
    assert entity == before


async def test_unknown_id_route_and_method(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Unknown id -> 404 ResourceNotFound; unknown route -> 400; wrong method -> 405."""
    auth = {"Authorization": f"Bearer {await get_token(http, emu)}"}
    base = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.get(f"{base}/does-not-exist", headers=auth) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "ResourceNotFound"
    async with http.get(f"{emu.base_url}/v1.0/deviceManagement/widgets", headers=auth) as resp:
        assert resp.status == 400
    async with http.put(base, json={}, headers=auth) as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["message"].startswith("Specified HTTP method is not allowed")


async def test_standard_headers(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """request-id, client-request-id (echoed, or equal to request-id), Date and x-ms-ags-diagnostic."""
    auth = {"Authorization": f"Bearer {await get_token(http, emu)}"}
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.get(url, headers=auth | {"client-request-id": "abc-123"}) as resp:
        assert resp.headers["client-request-id"] == "abc-123"
        assert resp.headers["request-id"] != "abc-123"
        assert "Date" in resp.headers
        assert "ServerInfo" in json.loads(resp.headers["x-ms-ags-diagnostic"])
    async with http.get(url, headers=auth) as resp:
        assert resp.headers["client-request-id"] == resp.headers["request-id"]


async def test_intune_style_error_messages(make_emulator: EmulatorFactory) -> None:
    """--intune-errors puts the JSON-encoded _version 3 string in error.message, with the request-id."""
    emu = await make_emulator(intune_errors=True)
    session, auth = await _session_token(emu)
    async with (
        session,
        session.get(f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/nope", headers=auth) as resp,
    ):
        assert resp.status == 404
        message = json.loads((await resp.json())["error"]["message"])
    assert message["_version"] == 3
    assert f"Activity ID: {resp.headers['request-id']}" in message["Message"]


async def test_list_pages_with_absolute_next_link(make_emulator: EmulatorFactory) -> None:
    """The collection pages by page size with an absolute @odata.nextLink until every object is seen."""
    emu = await make_emulator(connectors_per_tenant=7, page_size=3)
    session, auth = await _session_token(emu)
    seen: list[str] = []
    pages = 0
    async with session:
        url: str | None = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
        while url:
            assert url.startswith("https://")
            async with session.get(url, headers=auth) as resp:
                body = await resp.json()
            seen += [c["id"] for c in body["value"]]
            url = body.get("@odata.nextLink")
            pages += 1
    assert pages == 3
    assert seen == [c["id"] for c in tenant(emu, "contoso").connectors.values()]


async def test_create_get_delete_and_sync(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """POST 201 with a new id, GET it, sync by both routes (204, counted), DELETE 204, then 404."""
    auth = {"Authorization": f"Bearer {await get_token(http, emu)}"}
    base = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.post(base, json={"serverName": "created", "exchangeConnectorType": "hosted"}, headers=auth) as r:
        assert r.status == 201
        created = await r.json()
    url = f"{base}/{created['id']}"
    async with http.get(url, headers=auth) as r:
        assert (await r.json())["serverName"] == "created"
    for suffix in ("sync", "microsoft.graph.sync"):
        async with http.post(f"{url}/{suffix}", json={"syncType": "deltaSync"}, headers=auth) as r:
            assert r.status == 204
    async with http.post(f"{url}/sync", json={"syncType": "sometimes"}, headers=auth) as r:
        assert r.status == 400
    assert emu.stats()["tenants"]["contoso"]["syncs"] == {created["id"]: 2}
    async with http.delete(url, headers=auth) as r:
        assert r.status == 204
    async with http.get(url, headers=auth) as r:
        assert r.status == 404
