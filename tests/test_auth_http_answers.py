"""Identity answers that are not Entra's: a gateway's error page in a legacy code page is a refused token for that
tenant (AuthError naming the status), never a crash of the run or a "tenant not found"."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiohttp import web

from bulkconn.auth import MsalTokenProvider
from bulkconn.config import parse_config
from bulkconn.emulator.tls import ensure_tls
from bulkconn.errors import AuthError, IdentityUnreachable

TENANT = "00000000-0000-0000-0000-000000000001"
SECRET = "not-a-real-secret-5e1f"


async def test_a_latin1_error_page_from_a_gateway_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery answers; the token endpoint's 502 is an HTML page in Latin-1 without a charset (a proxy or WAF in
    front of the identity service): the tenant gets an AuthError that names the 502 and holds no secret."""
    base: dict[str, str] = {}

    async def discovery(_: web.Request) -> web.Response:
        root = f"{base['url']}/{TENANT}"
        return web.json_response(
            {
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "issuer": f"{root}/v2.0",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            }
        )

    async def token(_: web.Request) -> web.Response:
        return web.Response(status=502, body=b"<h1>Passerelle: \xe9chec</h1>", headers={"Content-Type": "text/html"})

    app = web.Application()
    app.router.add_get(f"/{TENANT}/v2.0/.well-known/openid-configuration", discovery)
    app.router.add_post(f"/{TENANT}/oauth2/v2.0/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ensure_tls(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    base["url"] = f"https://127.0.0.1:{port}"
    monkeypatch.setenv("BULKCONN_TEST_SECRET", SECRET)
    text = f"""
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "BULKCONN_TEST_SECRET"
authority_host = "{base["url"]}"
graph_url = "{base["url"]}"
[tenants.contoso]
tenant_id = "{TENANT}"
ca_bundle = "{tls.ca_file}"
"""
    provider = MsalTokenProvider(parse_config(text, file="test.toml", base=tmp_path), timeout_s=5)
    try:
        with pytest.raises(AuthError) as caught:
            await provider.token("contoso")
    finally:
        await provider.aclose()
        await runner.cleanup()
    assert not isinstance(caught.value, IdentityUnreachable)
    assert caught.value.code == "identity_service_error" and "502" in str(caught.value)
    assert SECRET not in str(caught.value)
