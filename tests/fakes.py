"""Test doubles for the engine's two seams: the network (:class:`FakeTransport`) and time (virtual time).

**Network.** ``FakeTransport(handler)`` answers every request with ``handler(request)``, in the spirit of
httpx's ``MockTransport``. The handler gets the :class:`~bulkconn.transport.HttpRequest` (method, URL,
body, ids) and returns an :class:`~bulkconn.transport.HttpResponse` or raises
:class:`~bulkconn.errors.TransportError` (no answer). Every request is kept in ``transport.requests``.
:func:`respond` and :func:`batch_response` build answers; :func:`batch_ids` reads a ``$batch`` body.

**Time.** :func:`run_virtual` runs a coroutine on a :class:`VirtualTimeLoop`: an asyncio selector loop whose
``time()`` starts at 0 and only moves when nothing can run, then jumps straight to the next timer. Every
``asyncio.sleep``, ``call_later``, ``wait_for`` and aiolimiter wait therefore takes no real time, and the
engine's :class:`~bulkconn.transport.LoopClock` (``now()`` is the loop's time) reads virtual seconds. A
run that would take minutes of pacing finishes in milliseconds, the same way every time. While a worker
thread (``asyncio.to_thread``, as the job reader uses) is busy, the loop waits for it for real instead of
jumping, so thread timing cannot move the virtual clock.

Usage::

    def handler(request: HttpRequest) -> HttpResponse:
        return respond(429, headers={"retry-after": "2"}) if first else respond(200)

    async def scenario() -> ...:
        async with FakeTransport(handler) as transport:
            ...  # Engine(transport=transport, ...) with the default LoopClock

    result = run_virtual(scenario())
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple

import orjson

from bulkconn.transport import HttpRequest, HttpResponse

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
Handler = Callable[[HttpRequest], HttpResponse]


class FakeTransport:
    """A :class:`~bulkconn.transport.Transport` whose answers come from ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []
        self.closed = False

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        await asyncio.sleep(0)  # a real send yields to the loop; so does this one
        return self.handler(request)

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def respond(status: int = 200, *, headers: Mapping[str, str] | None = None, body: Any = None) -> HttpResponse:
    """An answer with a JSON ``body`` (or none); header names are lower-cased as the real transport does."""
    raw = b"" if body is None else orjson.dumps(body)
    return HttpResponse(status, {k.lower(): v for k, v in (headers or {}).items()}, raw)


def error_body(code: str, message: str = "") -> dict[str, Any]:
    """Graph's OData error shape."""
    return {"error": {"code": code, "message": message or code}}


def batch_ids(request: HttpRequest) -> list[str]:
    """The sub-request ids of a ``$batch`` request, in order."""
    assert request.body is not None
    return [str(item["id"]) for item in orjson.loads(request.body)["requests"]]


def batch_response(subs: Mapping[str, tuple[int, Mapping[str, str], Any]]) -> HttpResponse:
    """A 200 ``$batch`` envelope with one sub-response per id: ``{id: (status, headers, body)}``."""
    responses = [
        {"id": rid, "status": status, "headers": dict(headers), **({"body": body} if body is not None else {})}
        for rid, (status, headers, body) in subs.items()
    ]
    return respond(200, body={"responses": responses})


class _VirtualSelector(selectors.DefaultSelector):
    """Polls for real; when nothing is ready and the loop would wait, moves the loop's virtual time instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready:
            return ready
        if timeout == 0:
            self._loop.advance(0.0)
            return ready
        if timeout is None or self._loop.threads_busy:
            # Only a thread (or nothing at all) can wake us: wait for it for real, at most a while.
            waited: list[tuple[selectors.SelectorKey, int]] = super().select(None if timeout is None else 5.0)
            return waited
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual: it jumps to the next timer whenever nothing is ready."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self.threads_busy = 0
        super().__init__(_VirtualSelector(self))
        # asyncio runs a timer up to one clock resolution early; in virtual time that would let a timer fire
        # before its deadline without the clock moving, and a "wait until the deadline" loop would spin.
        self._clock_resolution = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        # Always at least one step of float resolution (even when asked for 0: each idle turn of the loop
        # moves the clock a hair), so that a deadline computed as ``now + d`` is reached and passed.
        self._virtual_now = max(self._virtual_now + seconds, math.nextafter(self._virtual_now, math.inf))

    def run_in_executor(self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


class FakeGraph:
    """A handler for :class:`FakeTransport`: exchange connectors in memory, singles and ``$batch``, with Intune's
    sliding write window per tenant (``writes_per_window`` accepted writes per ``window_s``, in loop time).

    The tenant of a request is the part of its token before the last ``-`` (as ``tests.engine_harness.FakeAuth``
    issues them). ``retry_after`` picks how a 429 says when to come back: ``"seconds"`` (rounded up),
    ``"fractional"``, ``"http-date"`` or ``"absent"``. Counters: ``writes_total`` (every write attempt),
    ``throttled_total``, ``accepted`` (times of accepted writes per tenant), ``objects`` and ``syncs``.
    A GET of an object in ``objects`` answers it (404 when absent) and counts in ``reads_total``, not in the
    write window; a GET of the collection lists the tenant's ``objects`` in pages of ``page_size``.
    """

    def __init__(
        self, *, writes_per_window: int = 100, window_s: float = 20.0, retry_after: str = "seconds", page_size: int = 5
    ) -> None:
        self.writes_per_window = writes_per_window
        self.page_size = page_size
        self.reads_total = 0
        self.window_s = window_s
        self.retry_after = retry_after
        self.writes_total = 0
        self.throttled_total = 0
        self.accepted: dict[str, list[float]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.syncs: dict[tuple[str, str], int] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = request.token.rsplit("-", 1)[0]
        body = orjson.loads(request.body) if request.body else {}
        if not request.url.endswith("/$batch"):
            status, headers, answer = self._one(tenant, request.method, request.url, body)
            return respond(status, headers=headers, body=answer)
        responses = {}
        for item in body["requests"]:
            responses[str(item["id"])] = self._one(tenant, item["method"], item["url"], item.get("body") or {})
        return batch_response(responses)

    def max_in_window(self, tenant: str) -> int:
        """The most accepted writes any window of ``window_s`` seconds held."""
        times = self.accepted.get(tenant, [])
        return max((sum(1 for u in times if t <= u < t + self.window_s) for t in times), default=0)

    def _get(self, tenant: str, url: str) -> tuple[int, dict[str, str], Any]:
        self.reads_total += 1
        path, _, query = url.partition("?")
        name = path.rstrip("/").split("/")[-1]
        if name != "exchangeConnectors":
            found = self.objects.get((tenant, name))
            return (200, {}, {"id": name, **found}) if found is not None else (404, {}, error_body("ResourceNotFound"))
        mine = [{"id": oid, **obj} for (t, oid), obj in self.objects.items() if t == tenant]
        start = int(query.partition("$skiptoken=")[2] or 0)
        page: dict[str, Any] = {"value": mine[start : start + self.page_size]}
        if start + self.page_size < len(mine):
            relative = path.split("/v1.0", 1)[-1]
            page["@odata.nextLink"] = f"https://graph.microsoft.com/v1.0{relative}?$skiptoken={start + self.page_size}"
        return 200, {}, page

    def _one(self, tenant: str, method: str, url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if method == "GET":
            return self._get(tenant, url)
        self.writes_total += 1
        now = asyncio.get_running_loop().time()
        recent = [t for t in self.accepted.get(tenant, []) if t > now - self.window_s]
        if len(recent) >= self.writes_per_window:
            self.throttled_total += 1
            return 429, self._retry_after(recent[0] + self.window_s - now), error_body("TooManyRequests")
        self.accepted.setdefault(tenant, []).append(now)
        parts = url.split("/")
        if parts[-1] == "syncNow" or (method == "POST" and "syncType" in body):
            key = (tenant, parts[-2])
            self.syncs[key] = self.syncs.get(key, 0) + 1
            return 204, {}, None
        self.objects.setdefault((tenant, parts[-1]), {}).update(body)
        return 204, {}, None

    def _retry_after(self, wait_s: float) -> dict[str, str]:
        if self.retry_after == "absent":
            return {}
        if self.retry_after == "fractional":
            return {"retry-after": f"{wait_s:.3f}"}
        if self.retry_after == "http-date":
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=math.ceil(wait_s) + 1)
            return {"retry-after": format_datetime(when, usegmt=True)}
        return {"retry-after": str(math.ceil(wait_s))}
