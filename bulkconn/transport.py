"""The seams to the outside world: the network (:class:`Transport`) and time (:class:`Clock`).

The engine, its lanes and the pacer see only these two Protocols. Production uses
:class:`AiohttpTransport` and :class:`LoopClock`; tests use ``tests/fakes.py`` (a transport built
from a handler function and a virtual-time event loop), so every answer sequence runs in milliseconds.

:class:`AiohttpTransport` is the HTTP boundary: nothing else in bulkconn imports aiohttp, and every
failure to get an HTTP answer becomes a :class:`~bulkconn.errors.TransportError` here. A request
marked ``fresh_connection`` (the retry after a 503, as Graph's best practices ask) goes over a session
that never reuses connections.

What a hostile or broken answer cannot do here: redirects are never followed (a 3xx is returned as it
is, so the bearer token only ever goes to the URL bulkconn built); a body is read up to
:data:`MAX_BODY_BYTES` and no further; every request has a time limit (``timeout_s``, the connection
and TLS handshake included), so a server that accepts and never answers, or stops in the middle of an
answer, costs a timeout, never a hang. TLS certificates and host names are always verified: there is
no switch to turn that off, only ``ca_bundle`` to trust another CA.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import aiohttp
from msgspec import Struct
from yarl import URL

from bulkconn import __version__
from bulkconn.errors import TransportError
from bulkconn.proxies import env_proxy

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024  # Graph's answers to a PATCH, an action or a $batch of 20 are a few KiB
_READ_CHUNK = 64 * 1024
USER_AGENT = f"bulkconn/{__version__} (+https://github.com/bulkconn/bulkconn)"


class Clock(Protocol):
    """Monotonic time in seconds and a way to wait; every pacing and retry decision reads this."""

    def now(self) -> float:
        """Seconds on a monotonic clock (only differences mean anything)."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` seconds of this clock."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()``), the one ``call_later`` and ``wait_for`` use too."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)


# Not frozen (nor HttpResponse): one of each per request on the hot path; a frozen __init__ costs 4x.
class HttpRequest(Struct, kw_only=True):
    """One request to Graph: a single operation or a ``$batch`` envelope."""

    method: str
    url: str
    token: str
    client_request_id: str
    body: bytes | None = None
    ca_bundle: Path | None = None
    fresh_connection: bool = False
    # ``url`` is this Graph root followed by a path already percent-encoded (a single operation's, from
    # :mod:`bulkconn.registry`): the transport then joins it to the root it parsed once, rather than parse
    # (and quote) every URL again. Empty: ``url`` is parsed as it is.
    root: str = ""


class HttpResponse(Struct):
    status: int
    headers: Mapping[str, str]  # looked up by lower-case name (aiohttp's are case-insensitive)
    body: bytes


class Transport(Protocol):
    """Sends requests; an async context manager that closes its connections on exit."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """The HTTP answer; raise :class:`~bulkconn.errors.TransportError` when there is none."""
        ...

    async def aclose(self) -> None:
        """Close every connection; the transport is not used afterwards."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class AiohttpTransport:
    """One pooled aiohttp session per CA bundle (plus a no-reuse one for fresh connections)."""

    def __init__(self, *, timeout_s: float = 60.0, pool_size: int = 100, user_agent: str = USER_AGENT) -> None:
        # The headers every request carries, set once per session (aiohttp copies them into each request).
        self._headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "x-ms-throttle-priority": "low",  # bulk work yields to interactive use where Graph honours it
        }
        # Connecting (TCP and the TLS handshake) gets half the budget: a request still unsent when it runs out
        # is known never to have left (TransportError.sent is False).
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s / 2, 30.0))
        self._pool_size = pool_size
        self._sessions: dict[tuple[Path | None, bool], aiohttp.ClientSession] = {}
        self._roots: dict[str, URL | None] = {}  # see _target
        self._proxies: dict[str, URL | None] = {}  # see _env_proxy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _session(self, ca_bundle: Path | None, fresh: bool) -> aiohttp.ClientSession:
        key = (ca_bundle, fresh)
        session = self._sessions.get(key)
        if session is None:
            context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            connector = aiohttp.TCPConnector(ssl=context, limit=self._pool_size, force_close=fresh)
            # No trust_env: it looks the proxy up in a thread on every request (and a ~/.netrc login for Graph's
            # host, which would clash with the bearer token); see send and _env_proxy.
            session = self._sessions[key] = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return session

    async def _env_proxy(self, url: str) -> URL | None:
        """The environment's proxy for ``url`` (``HTTPS_PROXY``, else ``ALL_PROXY``, unless ``NO_PROXY`` lists the
        host; credentials from the proxy URL), looked up once per origin."""
        origin = "/".join(url.split("/", 3)[:3])  # scheme://host[:port]
        if origin not in self._proxies:  # None is an answer too: go direct
            self._proxies[origin] = await asyncio.to_thread(_lookup_proxy, origin)  # may read the system's settings
        return self._proxies[origin]

    def _target(self, request: HttpRequest) -> str | URL:
        """The URL to send to: a ``str`` aiohttp parses and percent-encodes, or a ``URL`` it takes as it is.

        A request with a ``root`` gets the root parsed once (cached) with the request's own path, already
        percent-encoded, put after it unparsed: the same URL for a fraction of the CPU. A root yarl would
        write differently (not in its canonical form, or with a query) is left to aiohttp every time.
        """
        root = request.root
        if not root:
            return request.url
        if root not in self._roots:
            parsed = URL(root)
            canonical = str(parsed) == root and not parsed.query_string and not parsed.fragment
            self._roots[root] = parsed if canonical else None
        base = self._roots[root]
        if base is None:
            return request.url
        return base.with_path(base.raw_path + request.url[len(root) :], encoded=True)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send one request; raise :class:`TransportError` when there is no HTTP answer."""
        headers = {"Authorization": f"Bearer {request.token}", "client-request-id": request.client_request_id}
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        session = self._session(request.ca_bundle, request.fresh_connection)  # it adds its own headers (_headers)
        # With a tenant's own ca_bundle (the emulator, a private endpoint) the environment's proxy settings are
        # ignored, as for the identity calls; otherwise HTTPS_PROXY/NO_PROXY apply, as users expect.
        no_env = request.ca_bundle is not None
        proxy = None if no_env else await self._env_proxy(request.url)  # its credentials, if any, in the URL
        try:
            async with session.request(
                request.method,
                self._target(request),
                data=request.body,
                headers=headers,
                allow_redirects=False,
                proxy=proxy,
            ) as resp:
                raw = await _read_capped(resp, request.url)
                if log.isEnabledFor(logging.DEBUG):  # the arguments cost, on every request
                    # Method, URL, status and ids only: never headers (Authorization) or bodies.
                    log.debug(
                        "%s %s -> %s request-id=%s client-request-id=%s",
                        request.method,
                        request.url,
                        resp.status,
                        resp.headers.get("request-id", ""),
                        request.client_request_id,
                    )
                # aiohttp's headers as they are (read-only, names looked up case-insensitively): no copy per answer.
                return HttpResponse(resp.status, resp.headers, raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, request.url, self._timeout.total) from exc

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await asyncio.sleep(0)  # let aiohttp finish closing transports


def _lookup_proxy(origin: str) -> URL | None:
    """The environment's proxy for ``origin`` (:func:`bulkconn.proxies.env_proxy`, the identity calls' rule too)."""
    found = env_proxy(origin)
    return URL(found) if found else None


async def _read_capped(resp: aiohttp.ClientResponse, url: str) -> bytes:
    """The body, or :class:`TransportError` ``ResponseTooLarge`` past :data:`MAX_BODY_BYTES` (the rest is not read)."""
    declared = resp.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large(url)
    content = resp.content
    chunks: list[bytes] = []
    size = 0
    while not content.at_eof():  # a small answer arrives whole: one read, not a second one to find the end
        chunk = await content.read(_READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(url)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(url: str) -> TransportError:
    limit_mib = MAX_BODY_BYTES // (1024 * 1024)
    return TransportError("ResponseTooLarge", f"the answer from {_host(url)} is larger than {limit_mib} MiB; not read")


def _host(url: str) -> str:
    return url.split("/")[2] if "://" in url else url


def _translate(exc: BaseException, url: str, timeout_s: float | None) -> TransportError:
    """The one place where aiohttp's exceptions become bulkconn's (the message names the host, never the token)."""
    host = _host(url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", "") or type(exc.certificate_error).__name__
        return TransportError(
            "TLSError",
            f"the TLS certificate of {host} is not trusted ({reason}); check the tenant's ca_bundle",
            sent=False,
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return TransportError("TLSError", f"TLS failure talking to {host}: {type(exc).__name__}", sent=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError("ConnectionError", f"cannot connect to {host}: {exc.os_error}", sent=False)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError("Timeout", f"no connection to {host} in {timeout_s or 0:g} s", sent=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError("AnswerCutOff", f"the answer from {host} was cut off before its end")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return TransportError("ConnectionReset", f"the connection to {host} broke: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return TransportError("Timeout", f"no complete answer from {host} in {timeout_s or 0:g} s")
    return TransportError("HttpError", f"{type(exc).__name__} talking to {host}")
