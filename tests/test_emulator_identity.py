"""The emulator's identity side and Graph authorization, driven by the real MSAL library."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import msal
import pytest
import requests

from bulkconn.emulator import Emulator
from bulkconn.emulator.tls import make_client_certificate
from tests.conftest import get_token, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

_OPEN: list[requests.Session] = []


@pytest.fixture(autouse=True)
def _close_sessions(emu: Emulator) -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _session(emu: Emulator) -> requests.Session:
    s = requests.Session()
    _OPEN.append(s)
    s.verify = str(emu.ca_file)
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify (msal-local.md 4)
    return s


def _cca(emu: Emulator, alias: str, credential: Any, client_id: str) -> msal.ConfidentialClientApplication:
    t = tenant(emu, alias)
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=f"{emu.base_url}/{t.tenant_id}",
        instance_discovery=False,
        http_client=_session(emu),
        timeout=10,
    )


async def test_msal_client_secret_token_and_cache(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """MSAL gets a token with a secret; the second call is served from its cache; Graph accepts it."""
    app = tenant(emu, "contoso").writer_app()
    cca = await asyncio.to_thread(_cca, emu, "contoso", app.secrets[0], app.client_id)
    scope = [f"{emu.base_url}/.default"]
    first = await asyncio.to_thread(cca.acquire_token_for_client, scope)
    second = await asyncio.to_thread(cca.acquire_token_for_client, scope)
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert first["expires_in"] > 300
    assert emu.stats()["token_requests"]["contoso"] == 1
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.get(url, headers={"Authorization": f"Bearer {first['access_token']}"}) as resp:
        assert resp.status == 200


async def test_msal_certificate_assertion(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A registered RSA certificate signs MSAL's client assertion; an unregistered one is invalid_client."""
    app = tenant(emu, "fabrikam").writer_app()
    key, cert = await asyncio.to_thread(make_client_certificate, "fabrikam-app")
    app.add_certificate(cert)
    cca = await asyncio.to_thread(
        _cca, emu, "fabrikam", {"private_key": key, "public_certificate": cert}, app.client_id
    )
    result = await asyncio.to_thread(cca.acquire_token_for_client, ["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    other_key, other_cert = await asyncio.to_thread(make_client_certificate, "stranger")
    stranger = await asyncio.to_thread(
        _cca, emu, "fabrikam", {"private_key": other_key, "public_certificate": other_cert}, app.client_id
    )
    refused = await asyncio.to_thread(stranger.acquire_token_for_client, ["https://graph.microsoft.com/.default"])
    assert refused["error"] == "invalid_client"


async def test_wrong_secret_and_unknown_app(emu: Emulator) -> None:
    """Wrong secret: invalid_client (AADSTS7000215); unknown app: unauthorized_client (AADSTS700016)."""
    app = tenant(emu, "contoso").writer_app()
    wrong = await asyncio.to_thread(_cca, emu, "contoso", "not-the-secret", app.client_id)
    result = await asyncio.to_thread(wrong.acquire_token_for_client, ["https://graph.microsoft.com/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    unknown = await asyncio.to_thread(_cca, emu, "contoso", "x", "99999999-9999-9999-9999-999999999999")
    result = await asyncio.to_thread(unknown.acquire_token_for_client, ["https://graph.microsoft.com/.default"])
    assert result["error"] == "unauthorized_client"


async def test_device_code_flow_and_refresh(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Device flow: pending until an admin approves, then a delegated token that writes; refresh works."""
    t = tenant(emu, "contoso")
    cli_app = next(a for a in t.apps.values() if a.public_client)
    pca = await asyncio.to_thread(
        msal.PublicClientApplication,
        cli_app.client_id,
        authority=f"{emu.base_url}/{t.tenant_id}",
        instance_discovery=False,
        http_client=_session(emu),
        timeout=10,
    )
    flow = await asyncio.to_thread(pca.initiate_device_flow, scopes=["https://graph.microsoft.com/.default"])
    pending = await asyncio.to_thread(pca.acquire_token_by_device_flow, flow, exit_condition=lambda f: True)
    assert pending["error"] == "authorization_pending"
    async with http.post(
        f"{emu.base_url}/_emulator/device/approve", json={"user_code": flow["user_code"], "user": "admin@contoso"}
    ) as resp:
        assert resp.status == 200
    result = await asyncio.to_thread(pca.acquire_token_by_device_flow, flow)
    assert "access_token" in result, result
    cid = next(iter(t.connectors.values()))["id"]
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{cid}"
    async with http.patch(
        url, json={"serverName": "by-admin"}, headers={"Authorization": f"Bearer {result['access_token']}"}
    ) as resp:
        assert resp.status == 200
    accounts = await asyncio.to_thread(pca.get_accounts)
    assert accounts
    # Drop the access token so MSAL must use the refresh token.
    for at in list(pca.token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        pca.token_cache.remove_at(at)
    before = emu.stats()["token_requests"]["contoso"]
    silent = await asyncio.to_thread(
        pca.acquire_token_silent, ["https://graph.microsoft.com/.default"], account=accounts[0]
    )
    assert silent is not None and "access_token" in silent
    assert emu.stats()["token_requests"]["contoso"] == before + 1


async def test_graph_rejects_bad_tokens(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """No token, garbage, revoked or aged-out tokens are all 401 InvalidAuthenticationToken."""
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic abc"}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "InvalidAuthenticationToken"
    token = await get_token(http, emu)
    emu.revoke_tokens("contoso")
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401
    fresh = await get_token(http, emu)
    async with http.get(url, headers={"Authorization": f"Bearer {fresh}"}) as resp:
        assert resp.status == 200
    async with http.post(f"{emu.base_url}/_emulator/tokens", json={"max_age_s": 0}) as resp:
        assert resp.status == 200
    async with http.get(url, headers={"Authorization": f"Bearer {fresh}"}) as resp:
        assert resp.status == 401
        assert "expired" in (await resp.json())["error"]["message"]


async def test_wrong_audience_is_401(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A token for another resource (Azure management) is refused by Graph."""
    token = await get_token(http, emu, scope="https://management.azure.com/.default")
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401


async def test_read_only_app_cannot_write(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """An app with only a Read role lists connectors but gets 403 Forbidden on PATCH."""
    token = await get_token(http, emu, app="bulkconn-readonly")
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors"
    async with http.get(base, headers=auth) as resp:
        assert resp.status == 200
    cid = next(iter(tenant(emu, "contoso").connectors.values()))["id"]
    async with http.patch(f"{base}/{cid}", json={"serverName": "x"}, headers=auth) as resp:
        assert resp.status == 403
        assert "ReadWrite.All" in (await resp.json())["error"]["message"]


async def test_tenant_isolation(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A contoso token cannot read or change a fabrikam connector; the attempt is counted."""
    token = await get_token(http, emu, "contoso")
    victim = next(iter(tenant(emu, "fabrikam").connectors.values()))
    before = dict(victim)
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{victim['id']}"
    auth = {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 404
    async with http.patch(url, json={"serverName": "stolen"}, headers=auth) as resp:
        assert resp.status == 404
    assert victim == before
    assert emu.stats()["cross_tenant_attempts"] == 2
    listed_ids: set[str] = set()
    async with http.get(f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors", headers=auth) as resp:
        listed_ids = {c["id"] for c in (await resp.json())["value"]}
    assert victim["id"] not in listed_ids


async def test_discovery_document(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """Discovery by tenant id or domain names the endpoints MSAL needs; an unknown tenant is invalid_tenant."""
    t = tenant(emu, "contoso")
    for segment in (t.tenant_id, t.domain):
        async with http.get(f"{emu.base_url}/{segment}/v2.0/.well-known/openid-configuration") as resp:
            doc = await resp.json()
        assert doc["token_endpoint"] == f"{emu.base_url}/{t.tenant_id}/oauth2/v2.0/token"
        assert "authorization_endpoint" in doc and "device_authorization_endpoint" in doc
    async with http.get(f"{emu.base_url}/nowhere.example/v2.0/.well-known/openid-configuration") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_tenant"
