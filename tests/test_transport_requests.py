"""What a request looks like on the wire from :class:`~bulkconn.transport.AiohttpTransport`: its URL (an object id
percent-encoded exactly as built, in one segment), its headers, and the proxy the environment names."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import yarl
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkconn import proxies
from bulkconn import transport as transport_module
from bulkconn.batching import request_for
from bulkconn.config import parse_config
from bulkconn.emulator.tls import ensure_tls
from bulkconn.engine.dispatch import dispatch
from bulkconn.errors import TransportError
from bulkconn.model import Action, Operation
from bulkconn.transport import USER_AGENT, AiohttpTransport, HttpRequest
from tests.engine_harness import DEFAULTS

pytestmark = pytest.mark.e2e

HOSTILE = ["a:b", "a/b", "a?b=1", "a#frag", "100%", "%2E%2E", "a b", "é", "..\\x", "a;b", "~", "./a"]


def _update(object_id: str) -> Operation:
    return Operation("1", 1, "contoso", "exchangeConnector", object_id, Action.UPDATE, {"serverName": "x"})


def _request(url: str, *, root: str = "", body: bytes | None = None) -> HttpRequest:
    return HttpRequest(method="PATCH", url=url, token="tok", client_request_id="cid", body=body, root=root)


@settings(max_examples=300, deadline=None, database=None)
@given(
    object_id=st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=40)).filter(
        lambda s: s not in (".", "..")
    )
)
def test_a_root_parsed_once_gives_the_url_as_built(object_id: str) -> None:
    """The URL joined to a cached root is the request's own text, its path exactly as built (no re-quoting), and
    the id one segment of it."""
    root = "https://graph.example/v1.0"
    url = root + request_for(_update(object_id)).url
    target = AiohttpTransport()._target(_request(url, root=root))
    assert isinstance(target, yarl.URL)
    assert str(target) == url and target.host == "graph.example"
    assert target.parts[4:] == (object_id,) and target.raw_parts[1:4] == (
        "v1.0",
        "deviceManagement",
        "exchangeConnectors",
    )


@pytest.mark.parametrize("root", ["https://graph.example/my%20proxy/v1.0", "https://graph.example/my proxy/v1.0"])
def test_a_root_yarl_would_write_otherwise_is_parsed_with_each_url(root: str) -> None:
    """Only a root in yarl's own form is cached; any other gets aiohttp's parsing, as a URL without a root."""
    url = root + "/deviceManagement/exchangeConnectors/x"
    target = AiohttpTransport()._target(_request(url, root=root))
    assert yarl.URL(str(target)) == yarl.URL(url)
    assert isinstance(target, yarl.URL) == ("%20" in root)


class _Recorder:
    """A plain-HTTP loopback server that keeps the raw path and headers of every request and answers 204."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, list[str]]]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.seen.append((request.raw_path, headers))
        return web.Response(status=204)


@pytest.fixture
async def recorder() -> AsyncIterator[_Recorder]:
    server = _Recorder()
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{server.runner.addresses[0][1]}"
    yield server
    await server.runner.cleanup()


async def test_an_id_that_needs_encoding_reaches_graph_encoded(
    recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hostile id arrives percent-encoded as the registry built it, in the collection's path, nowhere else."""
    monkeypatch.setenv("BULKCONN_TEST_SECRET", "not-a-real-secret")
    text = DEFAULTS + '[tenants.contoso]\ntenant_id = "00000000-0000-0000-0000-000000000001"\n'
    configured = parse_config(text, file="t.toml", base=Path()).tenants["contoso"]
    tenant = msgspec.structs.replace(configured, graph_url=recorder.url)  # plain HTTP, which a config refuses
    async with AiohttpTransport(timeout_s=5) as transport:
        for object_id in HOSTILE:
            op = _update(object_id)
            sent = await dispatch(transport, tenant, [op], token="tok", client_request_id="cid", fresh_connection=False)
            assert sent.answers[0].status == 204
    paths = [path for path, _ in recorder.seen]
    assert paths == [f"/v1.0{request_for(_update(object_id)).url}" for object_id in HOSTILE]
    assert "/v1.0/deviceManagement/exchangeConnectors/a%3Ab" in paths


async def test_every_request_carries_its_headers_once(recorder: _Recorder) -> None:
    """The token, the ids, bulkconn's User-Agent, JSON both ways and the low throttling priority; a body says it is
    JSON, a request without one says nothing of a body."""
    async with AiohttpTransport(timeout_s=5) as transport:
        await transport.send(_request(f"{recorder.url}/v1.0/x", body=b"{}"))
        await transport.send(
            HttpRequest(method="GET", url=f"{recorder.url}/v1.0/x", token="t2", client_request_id="c2")
        )
    (_, patch), (_, get) = recorder.seen
    expected = {
        "authorization": ["Bearer tok"],
        "client-request-id": ["cid"],
        "user-agent": [USER_AGENT],
        "accept": ["application/json"],
        "x-ms-throttle-priority": ["low"],
        "content-type": ["application/json"],
    }
    assert {name: patch[name] for name in expected} == expected
    assert get["authorization"] == ["Bearer t2"] and get["client-request-id"] == ["c2"]
    assert "content-type" not in get


class _Proxy:
    """A loopback HTTP proxy that refuses every CONNECT; it keeps each request line it saw."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.credentials: list[str] = []  # Proxy-Authorization values seen
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0].decode())
        self.credentials += [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                             if line.lower().startswith(b"proxy-authorization:")]  # fmt: skip
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> _Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_the_environment_proxy_is_used_and_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a ca_bundle, HTTPS_PROXY carries the requests (a CONNECT to Graph's host), looked up once per host."""
    lookups: list[str] = []
    real = proxies.env_proxy

    def counted(url: str) -> str | None:
        lookups.append(url)
        return real(url)

    monkeypatch.setattr(transport_module, "env_proxy", counted)  # where the transport looks it up
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with _Proxy() as proxy, AiohttpTransport(timeout_s=5) as transport:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        for _ in range(3):
            with pytest.raises(TransportError):
                await transport.send(_request("https://127.0.0.1:9/v1.0/x"))
    assert proxy.lines == ["CONNECT 127.0.0.1:9 HTTP/1.1"] * 3
    assert lookups == ["https://127.0.0.1:9"]


async def test_a_proxy_written_without_a_scheme_is_an_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY=127.0.0.1:PORT (no http://, as people write it for curl and requests) still carries the requests."""
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with _Proxy() as proxy, AiohttpTransport(timeout_s=5) as transport:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.removeprefix("http://"))
        with pytest.raises(TransportError):
            await transport.send(_request("https://127.0.0.1:9/v1.0/x"))
    assert proxy.lines == ["CONNECT 127.0.0.1:9 HTTP/1.1"]


async def test_all_proxy_with_credentials_carries_graph_calls_as_it_does_identity_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only ALL_PROXY set, with a user and password in its URL: Graph's requests go through it (one rule with the
    identity calls, bulkconn/proxies.py), the credentials as Proxy-Authorization."""
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with _Proxy() as proxy, AiohttpTransport(timeout_s=5) as transport:
        monkeypatch.setenv("ALL_PROXY", proxy.url.replace("http://", "http://someone:pa%40ss@"))
        with pytest.raises(TransportError):
            await transport.send(_request("https://127.0.0.1:9/v1.0/x"))
    assert proxy.lines == ["CONNECT 127.0.0.1:9 HTTP/1.1"]
    assert proxy.credentials == ["Basic " + base64.b64encode(b"someone:pa@ss").decode()]


async def test_no_proxy_and_a_ca_bundle_each_keep_requests_off_the_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A host NO_PROXY lists (by address or in an address range) goes direct; so does a tenant with its own
    ca_bundle, whatever the environment says."""
    ca = ensure_tls(tmp_path).ca_file
    async with _Proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("https_proxy", raising=False)
        async with AiohttpTransport(timeout_s=5) as transport:
            request = HttpRequest(
                method="GET", url="https://127.0.0.1:9/x", token="t", client_request_id="c", ca_bundle=ca
            )
            with pytest.raises(TransportError) as direct:
                await transport.send(request)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with AiohttpTransport(timeout_s=5) as transport:
            with pytest.raises(TransportError) as bypassed:
                await transport.send(_request("https://127.0.0.1:9/v1.0/x"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")  # a range holding the address
        async with AiohttpTransport(timeout_s=5) as transport:
            with pytest.raises(TransportError) as in_range:
                await transport.send(_request("https://127.0.0.1:9/v1.0/x"))
    assert proxy.lines == []
    assert direct.value.code == bypassed.value.code == in_range.value.code == "ConnectionError"
