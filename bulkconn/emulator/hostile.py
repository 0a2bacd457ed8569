"""Hostile answers: what a proxy, a broken gateway or a damaged connection puts on the wire instead of Graph.

Two families, each drawn once per request from the tenant's :class:`Faults` (docs/emulator.md, "Hostile
answers"): :func:`proxy_answer` answers *instead of* Graph (an HTML 502, a redirect, silence), so the request
has no effect; :func:`damage` replaces the answer Graph already produced (the request took effect) with one
that is not JSON, truncated, huge or never finished. :func:`damage_batch` breaks the ids or status of one
sub-response of a ``$batch``. :class:`SilentServer` accepts TCP connections and never says anything.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any

from aiohttp import web

from bulkconn.emulator.core import EmulatorCore, SubResponse
from bulkconn.emulator.options import Faults

EVIL_HOST = "https://evil.invalid"
PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
NOT_JSON = b"upstream answered: OK (this body is not JSON)\n"
_HOLD_POLL_S = 0.05


def _draw(core: EmulatorCore, choices: Sequence[tuple[str, float]]) -> str | None:
    """One roll over the kinds whose probability is set; ``None`` when none fires (no roll when all are 0)."""
    if not any(p for _, p in choices):
        return None
    roll = core.fault_rng.random()
    for kind, p in choices:
        if roll < p:
            core.stats.faults_total += 1
            core.stats.faults[kind] += 1
            return kind
        roll -= p
    return None


def closed(request: web.Request) -> web.StreamResponse:
    """Close the connection; the response returned can never be sent, which aiohttp treats as a client gone."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _hold_then_close(request: web.Request, limit_s: float) -> web.StreamResponse:
    """Keep the connection open, saying nothing more, until the client leaves or ``limit_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(_HOLD_POLL_S)
    return closed(request)


async def proxy_answer(
    core: EmulatorCore, request: web.Request, faults: Faults, base: dict[str, str]
) -> web.StreamResponse | None:
    """An answer from something in front of Graph, or ``None`` to let Graph answer."""
    kind = _draw(
        core,
        (
            ("html_502", faults.p_html_502),
            ("redirect_offhost", faults.p_redirect_offhost),
            ("redirect_samehost", faults.p_redirect_samehost),
            ("silent", faults.p_silent),
        ),
    )
    if kind is None:
        return None
    if kind == "html_502":
        return web.Response(status=502, body=PROXY_502, headers={"Server": "nginx", "Content-Type": "text/html"})
    if kind == "silent":
        return await _hold_then_close(request, faults.stall_s)
    host = EVIL_HOST if kind == "redirect_offhost" else core.base_url
    return web.Response(status=faults.redirect_status, headers=base | {"Location": host + request.path_qs})


async def damage(
    core: EmulatorCore, request: web.Request, faults: Faults, answer: web.Response
) -> web.StreamResponse | None:
    """The answer Graph produced, damaged on the way back; ``None`` leaves it intact."""
    kind = _draw(
        core,
        (
            ("not_json", faults.p_not_json),
            ("truncated", faults.p_truncated),
            ("huge", faults.p_huge),
            ("stall", faults.p_stall),
        ),
    )
    if kind is None:
        return None
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
    headers["Content-Type"] = "application/json"
    status = 200 if answer.status == 204 else answer.status
    if kind == "not_json":
        return web.Response(status=status, body=NOT_JSON, headers=headers)
    if kind == "huge":
        return await _huge(request, status, headers, faults.huge_body_bytes)
    body = answer.body if isinstance(answer.body, bytes) and answer.body else b'{"value": []}'
    transport = request.transport
    if transport is None:
        return closed(request)  # the client went away already
    if kind == "truncated":
        headers |= {"Content-Length": str(len(body) + 100), "Connection": "close"}
        transport.write(_head(status, headers) + body[: len(body) // 2])
        return closed(request)
    headers |= {"Content-Length": str(len(body))}
    transport.write(_head(status, headers))
    return await _hold_then_close(request, faults.stall_s)


async def _huge(request: web.Request, status: int, headers: dict[str, str], size: int) -> web.StreamResponse:
    """A valid JSON object of exactly ``size`` bytes (at least its frame), streamed in chunks."""
    prefix, suffix = b'{"value":[],"padding":"', b'"}'
    fill = max(size - len(prefix) - len(suffix), 0)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(prefix) + fill + len(suffix)
    await response.prepare(request)
    await response.write(prefix)
    chunk = b"x" * 65536
    for _ in range(fill // len(chunk)):
        await response.write(chunk)
    await response.write(b"x" * (fill % len(chunk)) + suffix)
    await response.write_eof()
    return response


def _fresh_id(taken: set[str]) -> str:
    n = len(taken) + 1
    while str(n) in taken:
        n += 1
    return str(n)


def damage_batch(core: EmulatorCore, faults: Faults, answer: SubResponse) -> SubResponse:
    """A 200 ``$batch`` answer with one sub-response's id or status broken (or intact when no fault fires)."""
    items: list[dict[str, Any]] = [dict(i) for i in answer.body["responses"]]
    kind = _draw(
        core,
        (
            ("batch_missing_id", faults.p_batch_missing_id if items else 0.0),
            ("batch_extra_id", faults.p_batch_extra_id),
            ("batch_duplicate_id", faults.p_batch_duplicate_id if items else 0.0),
            ("batch_unknown_id", faults.p_batch_unknown_id if items else 0.0),
            ("batch_no_status", faults.p_batch_no_status if items else 0.0),
        ),
    )
    if kind is None:
        return answer
    fresh = _fresh_id({str(i.get("id")) for i in items})
    if kind == "batch_missing_id":
        items.pop()
    elif kind == "batch_extra_id":
        items.append({"id": fresh, "status": 204, "headers": {}})
    elif kind == "batch_duplicate_id":
        error = {"error": {"code": "InternalError", "message": "Duplicate answer (injected fault)."}}
        items.append(items[0] | {"status": 500, "headers": {"Content-Type": "application/json"}, "body": error})
    elif kind == "batch_unknown_id":
        items[0]["id"] = fresh
    else:
        del items[0]["status"]
    return SubResponse(answer.status, answer.headers, {"responses": items})


class SilentServer:
    """A loopback TCP listener that accepts connections and never reads or writes: ``async with``, then ``url``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.url = ""
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # held open until the server stops

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._accept, self.host, 0, family=socket.AF_INET)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://{self.host}:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
