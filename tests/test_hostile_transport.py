"""The HTTP boundary against hostile servers on real loopback sockets: redirects, huge, stalled, silent, cut-off
answers and untrusted certificates each become a clear TransportError or answer, never a hang or a leak."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bulkconn.emulator import Emulator, Faults, SilentServer
from bulkconn.emulator.tls import ensure_tls
from bulkconn.errors import TransportError
from bulkconn.transport import MAX_BODY_BYTES, AiohttpTransport, HttpRequest
from tests.conftest import EmulatorFactory, get_token, tenant

pytestmark = pytest.mark.e2e


def _request(url: str, *, token: str = "secret-token", ca: Path | None = None, method: str = "GET") -> HttpRequest:
    return HttpRequest(method=method, url=url, token=token, client_request_id=str(uuid.uuid4()), ca_bundle=ca)


class _Local:
    """A plain-HTTP loopback server whose handlers are given per path; every request it saw is kept."""

    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.routes: dict[str, web.Response | None] = {}
        self._runner = web.AppRunner(self.app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        if request.path == "/chunked":
            response = web.StreamResponse(status=200)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                await response.write(b"x" * 65536)
            await response.write_eof()
            return response
        return self.routes.get(request.path) or web.Response(status=204)

    async def __aenter__(self) -> _Local:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def local() -> AsyncIterator[_Local]:
    async with _Local() as server:
        yield server


async def test_a_redirect_to_another_host_is_returned_not_followed(local: _Local) -> None:
    """A 307 to another origin comes back as the answer; the other server never sees a request (nor the token)."""
    async with _Local() as other:
        local.routes["/v1.0/x"] = web.Response(status=307, headers={"Location": f"{other.url}/steal"})
        async with AiohttpTransport(timeout_s=5) as transport:
            resp = await transport.send(_request(f"{local.url}/v1.0/x", method="PATCH"))
        assert resp.status == 307 and resp.headers["location"] == f"{other.url}/steal"
        assert other.seen == [] and len(local.seen) == 1


async def test_a_same_host_redirect_loop_is_one_request(local: _Local) -> None:
    """A redirect to itself is not followed either: one request, one 3xx answer, no loop."""
    local.routes["/v1.0/x"] = web.Response(status=308, headers={"Location": f"{local.url}/v1.0/x"})
    async with AiohttpTransport(timeout_s=5) as transport:
        resp = await transport.send(_request(f"{local.url}/v1.0/x"))
    assert resp.status == 308 and len(local.seen) == 1


async def test_a_huge_chunked_body_is_cut_at_the_cap(local: _Local) -> None:
    """A body without Content-Length that goes past MAX_BODY_BYTES: ResponseTooLarge, the rest is not read."""
    async with AiohttpTransport(timeout_s=30) as transport:
        with pytest.raises(TransportError) as failed:
            await transport.send(_request(f"{local.url}/chunked"))
    assert failed.value.code == "ResponseTooLarge" and failed.value.sent
    assert "larger than 16 MiB" in failed.value.message


async def _graph(make_emulator: EmulatorFactory, faults: Faults) -> tuple[Emulator, HttpRequest]:
    emu = await make_emulator(faults=faults)
    connector = next(iter(tenant(emu, "contoso").connectors.values()))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_trust(emu.ca_file))) as http:
        token = await get_token(http, emu)
    url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{connector['id']}"
    return emu, _request(url, token=token, ca=emu.ca_file)


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_huge_answer_over_tls_is_refused_by_its_declared_length(make_emulator: EmulatorFactory) -> None:
    """The emulator's p_huge (17 MiB with Content-Length): ResponseTooLarge before the body is read."""
    emu, request = await _graph(make_emulator, Faults(p_huge=1.0, huge_body_bytes=MAX_BODY_BYTES + 1024 * 1024))
    async with AiohttpTransport(timeout_s=30) as transport:
        with pytest.raises(TransportError) as failed:
            await transport.send(request)
    assert failed.value.code == "ResponseTooLarge"
    assert emu.stats()["faults"] == {"huge": 1}


@pytest.mark.parametrize(
    ("faults", "code", "sent"),
    [
        (Faults(p_stall=1.0, stall_s=30), "Timeout", True),
        (Faults(p_silent=1.0, stall_s=30), "Timeout", True),
        (Faults(p_truncated=1.0), "AnswerCutOff", True),
    ],
)
async def test_stalled_silent_and_cut_off_answers_end_in_a_clear_error(
    make_emulator: EmulatorFactory, faults: Faults, code: str, sent: bool
) -> None:
    """Headers then nothing, nothing at all after the request, half a body: a TransportError each, no hang."""
    _, request = await _graph(make_emulator, faults)
    async with AiohttpTransport(timeout_s=0.5) as transport:
        with pytest.raises(TransportError) as failed:
            await transport.send(request)
    assert (failed.value.code, failed.value.sent) == (code, sent)
    assert request.token not in str(failed.value)


async def test_a_server_that_never_answers_the_handshake_is_a_timeout_before_sending() -> None:
    """A listener that accepts TCP and says nothing (no TLS handshake): Timeout, and the request never left."""
    async with SilentServer() as silent, AiohttpTransport(timeout_s=0.5) as transport:
        with pytest.raises(TransportError) as failed:
            await transport.send(_request(f"{silent.url}/v1.0/x"))
    assert failed.value.code == "Timeout" and failed.value.sent is False
    assert silent.accepted >= 1


async def test_an_untrusted_certificate_is_a_tls_error_and_nothing_is_sent(
    make_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """The tenant's ca_bundle is another CA: TLSError naming the host and the reason; the emulator saw nothing."""
    emu, request = await _graph(make_emulator, Faults())
    other_ca = ensure_tls(tmp_path / "other").ca_file
    before = emu.stats()["requests_total"]
    async with AiohttpTransport(timeout_s=5) as transport:
        with pytest.raises(TransportError) as failed:
            await transport.send(
                HttpRequest(
                    method="GET", url=request.url, token=request.token, client_request_id="x", ca_bundle=other_ca
                )
            )
    assert failed.value.code == "TLSError" and failed.value.sent is False
    assert "is not trusted (unable to get local issuer certificate)" in failed.value.message
    assert request.token not in str(failed.value)
    assert emu.stats()["requests_total"] == before


async def test_verification_is_always_on_for_every_session() -> None:
    """Every TLS context the transport builds verifies the certificate and the host name; nothing turns that off."""
    async with AiohttpTransport() as transport:
        for ca, fresh in ((None, False), (None, True)):
            session = transport._session(ca, fresh)
            context = session.connector._ssl  # type: ignore[union-attr]
            assert isinstance(context, ssl.SSLContext)
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
