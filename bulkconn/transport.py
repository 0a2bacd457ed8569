"""The HTTP boundary: aiohttp sessions, standard request headers, and error translation.

Nothing else in bulkconn imports aiohttp. Every failure to get an HTTP answer becomes a
:class:`TransportError`. A request marked ``fresh_connection`` (the retry after a 503, as Graph's
best practices ask) goes over a session that never reuses connections.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bulkconn import __version__
from bulkconn.errors import TransportError

log = logging.getLogger(__name__)
USER_AGENT = f"bulkconn/{__version__} (+https://github.com/bulkconn/bulkconn)"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Transport:
    """One pooled aiohttp session per CA bundle (plus a no-reuse one for fresh connections)."""

    def __init__(self, *, timeout_s: float = 60.0, pool_size: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 30.0))
        self._pool_size = pool_size
        self._sessions: dict[tuple[str, bool], aiohttp.ClientSession] = {}

    def _session(self, ca_bundle: Path | None, fresh: bool) -> aiohttp.ClientSession:
        key = (str(ca_bundle or ""), fresh)
        session = self._sessions.get(key)
        if session is None:
            context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            connector = aiohttp.TCPConnector(ssl=context, limit=self._pool_size, force_close=fresh)
            # With a tenant's own ca_bundle (the emulator, a private endpoint) the environment's proxy settings
            # are ignored, as for the identity calls; otherwise HTTPS_PROXY/NO_PROXY apply, as users expect.
            session = self._sessions[key] = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, trust_env=ca_bundle is None
            )
        return session

    async def send(
        self,
        method: str,
        url: str,
        *,
        token: str,
        client_request_id: str,
        body: bytes | None = None,
        ca_bundle: Path | None = None,
        fresh_connection: bool = False,
    ) -> HttpResponse:
        """Send one request; raise :class:`TransportError` when there is no HTTP answer."""
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "x-ms-throttle-priority": "low",  # bulk work yields to interactive use where Graph honours it
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        session = self._session(ca_bundle, fresh_connection)
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                raw = await resp.read()
                # Method, URL, status and ids only: never headers (Authorization) or bodies.
                log.debug(
                    "%s %s -> %s request-id=%s client-request-id=%s",
                    method,
                    url,
                    resp.status,
                    resp.headers.get("request-id", ""),
                    client_request_id,
                )
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, raw)
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            raise TransportError("TLSError", f"TLS failure talking to {_host(url)}: {type(exc).__name__}") from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("ConnectionError", f"cannot connect to {_host(url)}: {exc.os_error}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            raise TransportError(
                "ConnectionReset", f"the connection to {_host(url)} broke: {type(exc).__name__}"
            ) from None
        except TimeoutError:
            raise TransportError("Timeout", f"no answer from {_host(url)} in {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransportError("HttpError", f"{type(exc).__name__} talking to {_host(url)}") from None

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await asyncio.sleep(0)  # let aiohttp finish closing transports


def _host(url: str) -> str:
    return url.split("/")[2] if "://" in url else url
