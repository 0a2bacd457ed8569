"""MSAL's HTTP client during a run: identity calls sent by aiohttp on the run's event loop.

MSAL is synchronous, so :mod:`bulkconn.auth` runs it in worker threads. With a :class:`LoopHttp` client as
``http_client``, each of MSAL's requests is handed to the event loop (``asyncio.run_coroutine_threadsafe``) and
sent there over one aiohttp session per CA bundle, while the worker thread waits for the answer. That costs a
fraction of a ``requests`` call (no per-call merging of environment settings, no guessing of the body's charset,
no connection per thread). What it keeps and what it changes:

* trust: the tenant's ``ca_bundle`` exactly, else the system store (``ssl.create_default_context``, as Graph's
  calls in :mod:`bulkconn.transport`; ``requests`` used certifi's bundle, or ``REQUESTS_CA_BUNDLE``);
* proxies: none with a ``ca_bundle``; otherwise the environment's, chosen as ``requests`` chooses them
  (``HTTPS_PROXY``, else ``ALL_PROXY``, unless ``NO_PROXY`` lists the host; credentials in the proxy's URL; a
  value without a scheme is ``http://``), read once per host; never ``~/.netrc``;
* every request bounded by ``timeout_s``, the connection and TLS handshake included; without a ``ca_bundle`` a
  failed connection is tried once more at once, as MSAL's own ``requests`` session does.

aiohttp's and asyncio's errors reach MSAL's caller as :class:`NoAnswer` caused by them (and so by the socket or
ssl error), and :func:`bulkconn.auth.unreachable` says which way the service could not be reached. A loop that is gone or closing
fails the waiting thread with :class:`LoopClosed` at once: never a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from requests.structures import CaseInsensitiveDict

from bulkconn.proxies import env_proxy

log = logging.getLogger(__name__)


class NoAnswer(Exception):
    """No HTTP answer; ``__cause__`` is aiohttp's or asyncio's error, which says why.

    Not the error itself: a certificate error is also a ``ValueError``, which MSAL would take for an unknown tenant.
    """


class LoopClosed(NoAnswer):
    """The event loop that sends the identity calls is gone or closing: the call was not made, or not finished."""


class HttpStatusError(Exception):
    """``raise_for_status`` on an error status (MSAL calls its own wrapper's instead; here for the protocol)."""


class Answer:
    """An HTTP answer in the shape MSAL reads (``msal.oauth2cli.http.Response``).

    A plain class: a dataclass would compile its methods when a run imports this module (docs/architecture.md).
    """

    __slots__ = ("headers", "status_code", "text")

    def __init__(self, status_code: int, text: str, headers: CaseInsensitiveDict[str]) -> None:
        self.status_code, self.text, self.headers = status_code, text, headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpStatusError(f"HTTP {self.status_code}")


def _encoded(fields: Mapping[str, Any] | str | bytes | None) -> str | bytes | None:
    """``fields`` encoded as ``requests`` does for a form or a query: ``None`` values left out, lists repeated."""
    if fields is None or isinstance(fields, str | bytes):
        return fields
    return urlencode({k: v for k, v in fields.items() if v is not None}, doseq=True)


def _merged(resp: aiohttp.ClientResponse) -> CaseInsensitiveDict[str]:
    """The answer's headers, a repeated one joined with commas, as MSAL's Response protocol asks."""
    return CaseInsensitiveDict({name: ", ".join(resp.headers.getall(name)) for name in resp.headers})


class _Request:
    __slots__ = ("body", "bundle", "headers", "method", "proxy", "url")

    def __init__(self, method: str, url: str, body: bytes | None, headers: dict[str, str], bundle: Path | None) -> None:
        self.method, self.url, self.body, self.headers, self.bundle = method, url, body, headers, bundle
        self.proxy: str | None = None


class BundleClient:
    """MSAL's ``http_client`` for the tenants with one CA bundle: blocking ``get``/``post`` for worker threads."""

    def __init__(self, owner: LoopHttp, bundle: Path | None) -> None:
        self._owner, self._bundle = owner, bundle

    def get(self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, Any] | None = None,
            **kwargs: Any) -> Answer:  # fmt: skip
        return self._owner.call(self._bundle, "GET", url, params, None, headers)

    def post(self, url: str, params: Mapping[str, Any] | None = None, data: Any = None,
             headers: Mapping[str, Any] | None = None, **kwargs: Any) -> Answer:  # fmt: skip
        return self._owner.call(self._bundle, "POST", url, params, data, headers)

    def close(self) -> None:
        """Nothing to do: the sessions belong to the :class:`LoopHttp` (MSAL may call this)."""


class LoopHttp:
    """The identity calls' aiohttp sessions on one event loop (one per CA bundle) and the threads waiting on them.

    Created and started on the loop; :meth:`call` is for other threads. The sessions are closed by a task started
    with them, when :meth:`close` is called or the loop cancels its tasks, so they are closed however the run ends.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, timeout_s: float, pool: int) -> None:
        self.loop = loop
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pool = pool
        self._sessions: dict[Path | None, aiohttp.ClientSession] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}  # (scheme, host) -> the environment's proxy for it
        self._waiting: set[concurrent.futures.Future[Answer]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._stop = asyncio.Event()
        self._keeper = loop.create_task(self._keep())

    def client(self, bundle: Path | None) -> BundleClient:
        return BundleClient(self, bundle)

    def call(
        self, bundle: Path | None, method: str, url: str, params: Any, data: Any, headers: Mapping[str, Any] | None
    ) -> Answer:
        """Send one request on the loop and wait for its answer (blocking: never call this on the loop's thread)."""
        query = _encoded(params)
        if query:
            url += ("&" if "?" in url else "?") + (query.decode() if isinstance(query, bytes) else query)
        sent = {k: str(v) for k, v in (headers or {}).items() if v is not None}
        if isinstance(data, Mapping):
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        body = _encoded(data)
        request = _Request(method, url, body.encode() if isinstance(body, str) else body, sent, bundle)
        request.proxy = self._proxy(url, bundle)  # may read the system's settings: here, not on the loop
        return self._wait(request)

    def _wait(self, request: _Request) -> Answer:
        if self._closed or not self.loop.is_running():
            raise LoopClosed("the run is ending")
        coro = self._send(request)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop closed since the check above
            coro.close()
            raise LoopClosed("the run is ending") from None
        with self._lock:
            self._waiting.add(future)
            if self._closed:  # close() took its list of waiting calls between the check above and now
                future.cancel()
        try:
            # aiohttp's timeout ends the request; this deadline only guards against a loop that stopped turning.
            return future.result(timeout=(self._timeout.total or 0) * 2 + 1)
        except concurrent.futures.CancelledError:
            raise LoopClosed("the run is ending") from None
        except LoopClosed:
            raise
        except Exception as exc:  # aiohttp's, socket and ssl errors, an answer that could not be read: no answer
            if not future.done():  # this wait ran out, not aiohttp's timeout: the loop stopped turning
                future.cancel()
            raise NoAnswer(type(exc).__name__) from exc
        finally:
            with self._lock:
                self._waiting.discard(future)

    def _proxy(self, url: str, bundle: Path | None) -> str | None:
        """The environment's proxy for ``url``, chosen as ``requests`` chooses it (read once per host)."""
        if bundle is not None:
            return None  # a tenant's own CA (the emulator, a private endpoint): no proxy, as for Graph
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            self._proxies[key] = env_proxy(url)
        return self._proxies[key]

    def _session(self, bundle: Path | None) -> aiohttp.ClientSession:
        session = self._sessions.get(bundle)
        if session is None:
            context = ssl.create_default_context(cafile=str(bundle) if bundle is not None else None)
            connector = aiohttp.TCPConnector(ssl=context, limit=self._pool)
            # trust_env off: the proxy is chosen per host in _proxy (bulkconn.proxies), no ~/.netrc credentials.
            session = self._sessions[bundle] = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return session

    async def _send(self, request: _Request) -> Answer:
        if self._closed:
            raise LoopClosed("the run is ending")
        session = self._session(request.bundle)
        attempts = 1 if request.bundle is not None else 2
        for attempt in range(1, attempts + 1):
            try:
                async with session.request(
                    request.method, request.url, data=request.body, headers=request.headers, proxy=request.proxy
                ) as resp:
                    text = await resp.text(errors="replace")  # as requests: a proxy's Latin-1 error page reads
                    if log.isEnabledFor(logging.DEBUG):  # method, URL without its query, status: never a body
                        log.debug("%s %s -> %s", request.method, request.url.split("?")[0], resp.status)
                    return Answer(resp.status, text, _merged(resp))
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc, aiohttp.ClientSSLError) or attempt == attempts:
                    raise
        raise AssertionError("not reached")

    async def _keep(self) -> None:
        """Hold the sessions open until :meth:`close` (or the loop's shutdown cancels this task), then close them."""
        try:
            await self._stop.wait()
        finally:
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
            for session in sessions:
                await session.close()

    def close(self) -> None:
        """Refuse new calls, wake every waiting thread (:class:`LoopClosed`), have the sessions closed (a closed loop
        closed them when it cancelled its tasks)."""
        self._closed = True
        with self._lock:
            waiting, self._waiting = list(self._waiting), set()
        for future in waiting:
            future.cancel()
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._stop.set()
        elif not self.loop.is_closed():  # from another thread: an asyncio.Event is set on its loop only
            self.loop.call_soon_threadsafe(self._stop.set)

    async def aclose(self) -> None:
        """:meth:`close`, and wait until the sessions are closed."""
        self.close()
        await self._keeper
