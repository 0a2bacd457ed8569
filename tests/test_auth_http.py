"""MSAL's identity calls over the run's event loop (bulkconn.authhttp): trust, proxies, failures, shutdown.

Over real loopback sockets: the emulator's HTTPS, a CONNECT proxy, servers that reset or never answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests
from aiohttp.resolver import DefaultResolver

from bulkconn.auth import MsalTokenProvider
from bulkconn.authhttp import BundleClient, LoopClosed, _encoded
from bulkconn.config import load_config, parse_config
from bulkconn.emulator import Emulator, EmulatorOptions
from bulkconn.emulator.artifacts import write_config
from bulkconn.emulator.hostile import SilentServer
from bulkconn.emulator.tls import ensure_tls
from bulkconn.errors import IdentityUnreachable

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA settings from the machine running the tests."""
    for name in (*PROXY_VARIABLES, "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def _provider(emu: Emulator, directory: Path, *, ca_bundle: Path | None, timeout_s: float = 30.0) -> MsalTokenProvider:
    """A provider for the emulator's tenants, trusting ``ca_bundle`` (None: no ca_bundle in the configuration)."""
    path = directory / "bulkconn.toml"
    write_config(emu.core, emu.ca_file, path)
    lines = path.read_text().splitlines()
    lines = [line for line in lines if not line.startswith("ca_bundle = ")]
    if ca_bundle is not None:
        lines.insert(lines.index("[defaults]") + 1, f'ca_bundle = "{ca_bundle}"')
    path.write_text("\n".join(lines) + "\n")
    provider = MsalTokenProvider(load_config(path), timeout_s=timeout_s)
    provider._backoff_s = 0.0  # the retries, without waiting
    return provider


async def _signed_in(emu: Emulator, directory: Path, tenant: str, *, ca_bundle: Path | None) -> None:
    """A fresh provider fetches ``tenant``'s token (a JWT) and is closed."""
    provider = _provider(emu, directory, ca_bundle=ca_bundle)
    try:
        assert (await provider.token(tenant)).count(".") == 2
    finally:
        await provider.aclose()


def _unreachable_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, authority: str, **options: str) -> MsalTokenProvider:  # fmt: skip
    """A provider whose one tenant's identity service is at ``authority`` (nothing there answers as Entra does)."""
    monkeypatch.setenv("BULKCONN_TEST_SECRET", "not-a-real-secret")
    extra = "".join(f'{key} = "{value}"\n' for key, value in options.items())
    text = f"""
[defaults]
client_id = "11111111-1111-1111-1111-111111111111"
client_secret_env = "BULKCONN_TEST_SECRET"
authority_host = "{authority}"
graph_url = "{authority}"
{extra}[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
"""
    provider = MsalTokenProvider(parse_config(text, file="test.toml", base=tmp_path), timeout_s=0.3)
    provider._backoff_s = 0.0
    return provider


async def _failure(provider: MsalTokenProvider) -> IdentityUnreachable:
    try:
        with pytest.raises(IdentityUnreachable) as caught:
            await provider.token("contoso")
    finally:
        await provider.aclose()
    return caught.value


async def test_tokens_come_over_the_loop_with_the_tenants_ca_bundle(emu: Emulator, tmp_path: Path) -> None:
    """With a ca_bundle, every tenant's token comes through the loop's aiohttp session: one request per tenant."""
    provider = _provider(emu, tmp_path, ca_bundle=emu.ca_file)
    try:
        tokens = await asyncio.gather(*(provider.token(alias) for alias in ("contoso", "fabrikam", "contoso")))
        assert all(token.count(".") == 2 for token in tokens)
        assert isinstance(provider._apps["contoso"].http_client.http_client, BundleClient)
    finally:
        await provider.aclose()
    assert emu.stats()["token_requests"] == {"contoso": 1, "fabrikam": 1}


async def test_a_ca_bundle_is_trusted_alone(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ca_bundle naming another CA is refused, though the environment's CA settings trust the emulator."""
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(emu.ca_file))
    other = ensure_tls(tmp_path / "other-ca").ca_file
    error = await _failure(_provider(emu, tmp_path, ca_bundle=other))
    assert "its TLS certificate is not trusted" in error.reason
    assert error.attempts == 1  # not retried: the same certificate is refused every time
    assert emu.stats()["token_requests"] == {"contoso": 0, "fabrikam": 0}


async def test_without_a_ca_bundle_the_system_store_decides(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ca_bundle: the system's trust (SSL_CERT_FILE here) is used, as for Graph; REQUESTS_CA_BUNDLE is not."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_file))
    error = await _failure(_provider(emu, tmp_path, ca_bundle=None))
    assert "its TLS certificate is not trusted" in error.reason
    monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_file))
    await _signed_in(emu, tmp_path, "contoso", ca_bundle=None)


class ConnectProxy:
    """A loopback HTTP proxy that tunnels CONNECT requests and remembers their targets."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.credentials: list[str] = []  # Proxy-Authorization values seen
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        self.targets.append(f"{method} {target}")
        self.credentials += [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                             if line.lower().startswith(b"proxy-authorization:")]  # fmt: skip
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @classmethod
    async def running(cls) -> AsyncIterator[ConnectProxy]:
        proxy = cls()
        server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0, family=socket.AF_INET)
        proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield proxy
        finally:
            server.close()
            for task in list(proxy._tasks):
                task.cancel()
            await asyncio.gather(*proxy._tasks, return_exceptions=True)
            await server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    async for running in ConnectProxy.running():
        yield running


@pytest.mark.parametrize(
    ("variable", "scheme"), [("HTTPS_PROXY", "http://"), ("all_proxy", "http://"), ("HTTPS_PROXY", "")],
    ids=["https_proxy", "all_proxy", "no-scheme"],
)  # fmt: skip
async def test_without_a_ca_bundle_the_environments_proxy_is_used_unless_no_proxy_lists_the_host(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy, variable: str, scheme: str
) -> None:
    """HTTPS_PROXY (else ALL_PROXY, as requests) carries the identity calls, with the credentials in its URL, also
    written without a scheme (`proxy.corp:3128`, read as http:// like curl and requests); NO_PROXY naming the host
    bypasses it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_file))
    monkeypatch.setenv(variable, proxy.url.replace("http://", f"{scheme}someone:pa%40ss@"))
    await _signed_in(emu, tmp_path, "contoso", ca_bundle=None)
    host = emu.base_url.removeprefix("https://")
    assert proxy.targets and set(proxy.targets) == {f"CONNECT {host}"}
    assert set(proxy.credentials) == {"Basic " + base64.b64encode(b"someone:pa@ss").decode()}
    proxy.targets.clear()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await _signed_in(emu, tmp_path, "fabrikam", ca_bundle=None)
    assert proxy.targets == []


async def test_no_proxy_listing_an_address_range_holding_the_identity_host_bypasses_the_proxy(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy
) -> None:
    """NO_PROXY=127.0.0.0/8 (a range, as requests honoured it for MSAL's calls before they moved to aiohttp) keeps
    the identity calls to 127.0.0.1 off the proxy."""
    monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_file))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8, 127.0.0.0/8")
    await _signed_in(emu, tmp_path, "contoso", ca_bundle=None)
    assert proxy.targets == []


async def test_a_ca_bundle_tenant_ignores_the_environments_proxy(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy
) -> None:
    """With a ca_bundle (the emulator, a private endpoint) the identity calls go direct, as Graph's do."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    await _signed_in(emu, tmp_path, "contoso", ca_bundle=emu.ca_file)
    assert proxy.targets == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_proxy_that_cannot_be_reached_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead HTTPS_PROXY: "the proxy failed" (not a refused credential, nor the identity host's fault), retried."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    error = await _failure(_unreachable_provider(monkeypatch, tmp_path, "https://login.example.test"))
    assert error.reason == "the proxy failed" and error.attempts == 3
    assert error.host == "login.example.test"


async def test_a_name_that_is_not_found_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver finds no such name (aiohttp's own resolver path, answered locally): "the name was not found"."""

    async def not_found(self: object, host: str, port: int = 0, family: int = 0) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(DefaultResolver, "resolve", not_found)
    error = await _failure(_unreachable_provider(monkeypatch, tmp_path, "https://login.example.test"))
    assert error.reason == "the name was not found (DNS)" and error.attempts == 3


@pytest.mark.parametrize(("ca_bundle", "connections"), [(False, 6), (True, 3)], ids=["system-store", "ca-bundle"])
async def test_a_reset_connection_is_named_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_bundle: bool, connections: int
) -> None:
    """A server that resets every connection: "connection reset" after 3 tries; without a ca_bundle each try
    connects twice (MSAL's own requests session retried a failed connection once)."""
    accepted: list[int] = []

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.transport.abort()  # an RST, before any TLS

    server = await asyncio.start_server(reset, "127.0.0.1", 0, family=socket.AF_INET)
    port = server.sockets[0].getsockname()[1]
    bundle = {"ca_bundle": str(ensure_tls(tmp_path / "ca").ca_file)} if ca_bundle else {}
    try:
        provider = _unreachable_provider(monkeypatch, tmp_path, f"https://127.0.0.1:{port}", **bundle)
        error = await _failure(provider)
    finally:
        server.close()
        await server.wait_closed()
    assert error.reason == "connection reset" and error.attempts == 3
    assert len(accepted) == connections


async def test_a_silent_service_is_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts and never answers: each try ends at the request timeout, "no answer in 0.3 s"."""
    async with SilentServer() as silent:
        error = await _failure(_unreachable_provider(monkeypatch, tmp_path, silent.url))
    assert error.reason == "no answer in 0.3 s" and error.attempts == 3
    assert silent.accepted >= 3


class _NoticingSilentServer(SilentServer):
    def __init__(self) -> None:
        super().__init__()
        self.noticed = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await super()._accept(reader, writer)
        self.noticed.set()


async def test_closing_the_provider_wakes_a_waiting_call_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run ending while MSAL waits for a silent service: the call fails now, not after its 30 s timeout."""
    silent = _NoticingSilentServer()
    async with silent:
        provider = _unreachable_provider(monkeypatch, tmp_path, silent.url)
        provider._timeout_s = 30.0  # longer than this test may take (10 s): only close() can end the wait
        waiting = asyncio.create_task(provider.token("contoso"))
        await silent.noticed.wait()
        provider.close()
        with pytest.raises(IdentityUnreachable) as caught:
            await waiting
        await provider.aclose()
    assert caught.value.reason == "the run ended before it answered"
    assert caught.value.attempts == 1  # not tried again: the run is ending


def test_a_call_after_the_loop_is_gone_fails_at_once_and_the_sessions_were_closed(tmp_path: Path) -> None:
    """The loop that served the calls has finished: a late MSAL call fails at once; its sessions were closed."""
    provider: MsalTokenProvider | None = None

    async def one_token() -> None:
        nonlocal provider
        async with Emulator(EmulatorOptions(tenants=1, connectors_per_tenant=1, state_dir=tmp_path / "state")) as emu:
            provider = _provider(emu, tmp_path, ca_bundle=emu.ca_file)
            await provider.token("contoso")  # the loop ends without the provider being closed

    asyncio.run(one_token())
    assert provider is not None and provider._http is not None
    assert provider._http._sessions == {}  # closed when the loop cancelled its tasks
    with pytest.raises(LoopClosed):
        provider._http.client(None).get("https://127.0.0.1:1/")
    provider.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"grant_type": "client_credentials", "client_id": "a b&c", "scope": "https://graph.microsoft.com/.default"},
        {"claims": None, "scope": ["openid", "profile"], "x": "ü=1"},
        "already=encoded&as=is",
        None,
    ],
)
def test_forms_and_queries_are_encoded_as_requests_encodes_them(fields: object) -> None:
    """What MSAL hands over is sent byte for byte as its own requests session would send it."""
    expected = requests.Request("POST", "https://login.example.test/", data=fields).prepare().body
    assert _encoded(fields) == expected  # type: ignore[arg-type]


async def test_debug_logs_name_the_calls_but_no_secret_or_token(
    emu: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG the identity calls are logged as method, URL and status; the secret and the token never appear."""
    caplog.set_level(logging.DEBUG)
    provider = _provider(emu, tmp_path, ca_bundle=emu.ca_file)
    try:
        token = await provider.token("contoso")
    finally:
        await provider.aclose()
    secret = (tmp_path / "bulkconn.secrets" / "contoso.secret").read_text().strip()
    assert "/oauth2/v2.0/token -> 200" in caplog.text
    assert secret not in caplog.text and token not in caplog.text and token.split(".")[2] not in caplog.text
