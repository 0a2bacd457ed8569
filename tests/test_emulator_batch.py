"""The emulator's JSON $batch rules, one by one (graph-protocol.md sections 1 and 6)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bulkconn.emulator import Emulator
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

JSON = {"Content-Type": "application/json"}


def _patch(rid: str, cid: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "method": "PATCH",
        "url": f"/deviceManagement/exchangeConnectors/{cid}",
        "headers": JSON,
        "body": body,
    } | extra


async def _batch(http: aiohttp.ClientSession, emu: Emulator, payload: Any, token: str) -> tuple[int, Any]:
    async with http.post(
        f"{emu.base_url}/v1.0/$batch",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        return resp.status, await resp.json()


def _ids(emu: Emulator, n: int) -> list[str]:
    return [c["id"] for c in list(tenant(emu, "contoso").connectors.values())[:n]]


REJECTED: list[tuple[str, Any, str]] = [
    ("not an object", [1], "Invalid batch payload"),
    ("no requests", {}, "Invalid batch payload"),
    ("empty requests", {"requests": []}, "Invalid batch payload"),
    (
        "21 requests",
        {
            "requests": [
                {"id": str(i), "method": "GET", "url": "/deviceManagement/exchangeConnectors"} for i in range(21)
            ]
        },
        "limit of 20",
    ),
    (
        "duplicate ids ignoring case",
        {
            "requests": [
                {"id": "a", "method": "GET", "url": "/deviceManagement/exchangeConnectors"},
                {"id": "A", "method": "GET", "url": "/deviceManagement/exchangeConnectors"},
            ]
        },
        "has to be unique",
    ),
    (
        "absolute url",
        {
            "requests": [
                {
                    "id": "1",
                    "method": "GET",
                    "url": "https://graph.microsoft.com/v1.0/deviceManagement/exchangeConnectors",
                }
            ]
        },
        "Invalid batch payload",
    ),
    (
        "body without Content-Type",
        {"requests": [{"id": "1", "method": "PATCH", "url": "/deviceManagement/exchangeConnectors/x", "body": {}}]},
        "does not contain a Content-Type header",
    ),
    (
        "dependsOn a later id",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": "/deviceManagement/exchangeConnectors", "dependsOn": ["2"]},
                {"id": "2", "method": "GET", "url": "/deviceManagement/exchangeConnectors"},
            ]
        },
        "Invalid dependency",
    ),
    (
        "dependsOn an unknown id",
        {"requests": [{"id": "1", "method": "GET", "url": "/deviceManagement/exchangeConnectors", "dependsOn": ["9"]}]},
        "Invalid dependency",
    ),
    (
        "mixed dependency pattern",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": "/deviceManagement/exchangeConnectors"},
                {"id": "2", "method": "GET", "url": "/deviceManagement/exchangeConnectors", "dependsOn": ["1"]},
                {"id": "3", "method": "GET", "url": "/deviceManagement/exchangeConnectors"},
                {"id": "4", "method": "GET", "url": "/deviceManagement/exchangeConnectors", "dependsOn": ["3"]},
            ]
        },
        "fully sequential or fully parallel",
    ),
]


@pytest.mark.parametrize(("case", "payload", "message"), REJECTED, ids=[r[0] for r in REJECTED])
async def test_malformed_batch_is_rejected_whole(
    emu: Emulator, http: aiohttp.ClientSession, case: str, payload: Any, message: str
) -> None:
    """A batch that breaks a rule is refused whole with 400, and none of its requests run."""
    token = await get_token(http, emu)
    status, body = await _batch(http, emu, payload, token)
    assert status == 400, case
    assert message in body["error"]["message"]
    assert emu.stats()["requests_total"] == 0


async def test_non_json_envelope_is_400(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """An envelope that is not JSON at all is 400."""
    token = await get_token(http, emu)
    async with http.post(
        f"{emu.base_url}/v1.0/$batch", data=b"{nope", headers={"Authorization": f"Bearer {token}"} | JSON
    ) as resp:
        assert resp.status == 400


async def test_each_sub_request_is_evaluated_and_answered_by_id(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """200 envelope; a good PATCH succeeds, a bad one fails alone, a versioned url gets a sub-400."""
    token = await get_token(http, emu)
    good, bad = _ids(emu, 2)
    status, body = await _batch(
        http,
        emu,
        {
            "requests": [
                _patch("ok", good, {"serverName": "batched"}),
                _patch("bad", bad, {"status": "nope"}),
                {"id": "versioned", "method": "GET", "url": "/v1.0/deviceManagement/exchangeConnectors"},
                {"id": "noslash", "method": "GET", "url": f"deviceManagement/exchangeConnectors/{good}"},
            ]
        },
        token,
    )
    assert status == 200
    by_id = {r["id"]: r for r in body["responses"]}
    assert by_id["ok"]["status"] == 200 and by_id["ok"]["body"]["serverName"] == "batched"
    assert by_id["bad"]["status"] == 400 and "status" in by_id["bad"]["body"]["error"]["message"]
    assert by_id["versioned"]["status"] == 400
    assert "segment 'v1.0'" in by_id["versioned"]["body"]["error"]["message"]
    assert by_id["noslash"]["status"] == 200
    assert tenant(emu, "contoso").connectors[good.lower()]["serverName"] == "batched"


async def test_dependants_of_a_failed_request_get_424(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Sequential chain: once a step fails, every later step is 424 and does not run."""
    token = await get_token(http, emu)
    a, b, c = _ids(emu, 3)
    status, body = await _batch(
        http,
        emu,
        {
            "requests": [
                _patch("1", a, {"serverName": "one"}),
                _patch("2", b, {"status": "broken"}, dependsOn=["1"]),
                _patch("3", c, {"serverName": "three"}, dependsOn=["2"]),
            ]
        },
        token,
    )
    assert status == 200
    statuses = {r["id"]: r["status"] for r in body["responses"]}
    assert statuses == {"1": 200, "2": 400, "3": 424}
    assert tenant(emu, "contoso").connectors[c.lower()]["serverName"] != "three"


async def test_same_dependency_pattern_is_allowed(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Every dependant naming the same first request is a documented pattern, not 'mixed'."""
    token = await get_token(http, emu)
    a, b, c = _ids(emu, 3)
    status, body = await _batch(
        http,
        emu,
        {
            "requests": [
                _patch("1", a, {"serverName": "one"}),
                _patch("2", b, {"serverName": "two"}, dependsOn=["1"]),
                _patch("3", c, {"serverName": "three"}, dependsOn=["1"]),
            ]
        },
        token,
    )
    assert status == 200
    assert sorted(r["status"] for r in body["responses"]) == [200, 200, 200]


async def test_response_order_differs_from_request_order_deterministically(make_emulator: EmulatorFactory) -> None:
    """Sub-responses come back shuffled, the same way for the same seed, another way for another seed."""
    orders = []
    for seed in (7, 7, 8):
        emu = await make_emulator(seed=seed)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
            token = await get_token(http, emu)
            payload = {
                "requests": [
                    {"id": str(i), "method": "GET", "url": "/deviceManagement/exchangeConnectors"} for i in range(10)
                ]
            }
            _, body = await _batch(http, emu, payload, token)
        orders.append([r["id"] for r in body["responses"]])
    assert orders[0] != [str(i) for i in range(10)]
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]
    assert sorted(orders[0]) == sorted(str(i) for i in range(10))


async def test_sub_requests_are_throttled_individually(make_emulator: EmulatorFactory) -> None:
    """With 5 writes allowed per window, a batch of 8 PATCHes gets 5 successes and 3 sub-429s with Retry-After."""
    emu = await make_emulator(writes_per_app=5, time_scale=1.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        token = await get_token(http, emu)
        ids = _ids(emu, 5)
        payload = {"requests": [_patch(str(i), ids[i % 5], {"exchangeAlias": f"a{i}"}) for i in range(8)]}
        status, body = await _batch(http, emu, payload, token)
    assert status == 200
    throttled = [r for r in body["responses"] if r["status"] == 429]
    assert len(throttled) == 3
    for r in throttled:
        assert 0 < int(r["headers"]["Retry-After"]) <= 20
        assert r["body"]["error"]["code"] == "TooManyRequests"
    assert emu.stats()["tenants"]["contoso"]["max_writes_in_window"] == 5
