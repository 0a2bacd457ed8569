"""Test doubles for the engine's two seams: the network (:class:`FakeTransport`) and time (virtual time).

**Network.** ``FakeTransport(handler)`` answers every request with ``handler(request)``, in the spirit of
httpx's ``MockTransport``. The handler gets the :class:`~bulkconn.transport.HttpRequest` (method, URL,
body, ids) and returns an :class:`~bulkconn.transport.HttpResponse` or raises
:class:`~bulkconn.errors.TransportError` (no answer). Every request is kept in ``transport.requests``.
``latency=jittered(0.05, 0.04, seed=1)`` delays each request and each answer (in virtual time).
:func:`respond` and :func:`batch_response` build answers; :func:`batch_ids` reads a ``$batch`` body.

**Time.** :func:`run_virtual` runs a coroutine on a :class:`VirtualTimeLoop`: an asyncio selector loop whose
``time()`` starts at 0 and only moves when nothing can run, then jumps straight to the next timer. Every
``asyncio.sleep``, ``call_later`` and ``wait_for`` therefore takes no real time, and the
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
import itertools
import math
import random
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple

import orjson

from bulkconn.transport import HttpRequest, HttpResponse
from tests.pacing_sim import ServerWindow

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
Handler = Callable[[HttpRequest], HttpResponse]


class FakeTransport:
    """A :class:`~bulkconn.transport.Transport` whose answers come from ``handler``."""

    def __init__(self, handler: Handler, *, latency: Callable[[], float] | None = None) -> None:
        self.handler = handler
        self.latency = latency
        self.requests: list[HttpRequest] = []
        self.closed = False

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        await asyncio.sleep(self.latency() if self.latency else 0)  # a real send yields to the loop; so does this one
        answer = self.handler(request)
        if self.latency:
            await asyncio.sleep(self.latency())  # the way back
        return answer

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def jittered(latency_s: float, jitter_s: float, *, seed: int) -> Callable[[], float]:
    """One-way latencies uniform in ``latency_s`` +- ``jitter_s``, from a seeded generator (for ``FakeTransport``)."""
    rng = random.Random(seed)
    return lambda: latency_s + rng.uniform(-jitter_s, jitter_s)


def respond(status: int = 200, *, headers: Mapping[str, str] | None = None, body: Any = None) -> HttpResponse:
    """An answer with a JSON ``body`` (or none); header names are lower-cased (the real transport looks them up case-insensitively)."""
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

    def __init__(self, *, inline_threads: bool = False) -> None:
        self._virtual_now = 0.0
        self.threads_busy = 0
        self.inline_threads = inline_threads
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
        if self.inline_threads:
            # Run it here and now: no thread can finish early or late, so every run is the same to the callback.
            done: asyncio.Future[T] = self.create_future()
            try:
                done.set_result(func(*args))
            except Exception as exc:  # handed to the awaiting coroutine, as a thread would
                done.set_exception(exc)
            return done
        future = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1


def run_virtual(coro: Coroutine[Any, Any, T], *, inline_threads: bool = False) -> T:
    """Run ``coro`` to the end on a fresh :class:`VirtualTimeLoop`.

    ``inline_threads``: work handed to a thread (``asyncio.to_thread``) runs at once on the loop instead, so that
    the order of events, and so every figure of the run, is the same each time.
    """
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(inline_threads=inline_threads)) as runner:
        return runner.run(coro)


VIRTUAL_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def virtual_wall_now() -> dt.datetime:
    """The wall clock in virtual time (``VIRTUAL_EPOCH`` + the loop's time): patch ``bulkconn.retry.wall_now`` with it
    so that an HTTP-date ``Retry-After`` reads the same every run."""
    return VIRTUAL_EPOCH + dt.timedelta(seconds=asyncio.get_running_loop().time())


class FakeGraph:
    """A handler for :class:`FakeTransport`: exchange connectors in memory, singles and ``$batch``, with Intune's
    limits as exact sliding windows in loop time, counted at arrival, each ``$batch`` sub-request on its own.

    Per tenant: ``writes_per_window`` writes per ``window_s`` (``tenant_limits`` overrides it per tenant, and
    :meth:`set_limit` changes it mid-run); ``tenant_window`` adds the tenant's limit for all apps, which other apps
    fill with ``other_apps_per_s[tenant]`` writes per second that we never see; ``global_window`` is one window over
    every tenant (Graph's global limit per app). Only admitted requests occupy a window.

    The tenant of a request is the part of its token before the last ``-`` (as ``tests.engine_harness.FakeAuth``
    issues them). ``retry_after`` picks how a 429 says when to come back: ``"seconds"`` (rounded up),
    ``"fractional"``, ``"http-date"`` (whole seconds on :func:`virtual_wall_now`) or ``"absent"``; a tuple rotates
    through its forms one throttled answer after another. Counters: ``writes_total`` (every write received),
    ``throttled_total``, ``refused_by_global`` (writes the global window refused), ``attempts`` and ``accepted``
    (arrival times per tenant of every write and of the admitted ones), ``objects`` and ``syncs``.
    A GET of an object in ``objects`` answers it (404 when absent) and counts in ``reads_total``, not in the
    write window; a GET of the collection lists the tenant's ``objects`` in pages of ``page_size``.
    """

    def __init__(
        self,
        *,
        writes_per_window: int = 100,
        window_s: float = 20.0,
        retry_after: str | tuple[str, ...] = "seconds",
        page_size: int = 5,
        tenant_limits: Mapping[str, tuple[int, float]] | None = None,
        tenant_window: tuple[int, float] | None = None,
        other_apps_per_s: Mapping[str, float] | None = None,
        global_window: tuple[int, float] | None = None,
    ) -> None:
        self.writes_per_window = writes_per_window
        self.page_size = page_size
        self.reads_total = 0
        self.window_s = window_s
        self._forms = itertools.cycle((retry_after,) if isinstance(retry_after, str) else retry_after)
        self._tenant_limits = dict(tenant_limits or {})
        self._tenant_window = tenant_window
        self._other_apps_per_s = dict(other_apps_per_s or {})
        self.windows: dict[str, list[ServerWindow]] = {}
        self.global_window = ServerWindow(*global_window) if global_window else None
        self._other_next: dict[str, float] = {}
        self.writes_total = 0
        self.throttled_total = 0
        self.refused_by_global = 0
        self.attempts: dict[str, list[float]] = {}
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

    def set_limit(self, tenant: str, writes_per_window: int, window_s: float) -> None:
        """Change ``tenant``'s write limit from now on (admitted writes stay in the window)."""
        app = self._windows(tenant)[0]
        app.limit, app.window_s = writes_per_window, window_s

    def max_in_window(self, tenant: str) -> int:
        """The most accepted writes any window of ``window_s`` seconds held."""
        times = self.accepted.get(tenant, [])
        return max((sum(1 for u in times if t <= u < t + self.window_s) for t in times), default=0)

    def _windows(self, tenant: str) -> list[ServerWindow]:
        windows = self.windows.get(tenant)
        if windows is None:
            app = ServerWindow(*self._tenant_limits.get(tenant, (self.writes_per_window, self.window_s)))
            windows = self.windows[tenant] = [app]
            if self._tenant_window is not None:
                windows.append(ServerWindow(*self._tenant_window))
            self._other_next[tenant] = 0.0
        return windows

    def _admit(self, tenant: str, now: float) -> float:
        """0 when a write of ``tenant`` arriving at ``now`` is admitted (and counted), else the wait until it would be."""
        windows = self._windows(tenant)
        rate = self._other_apps_per_s.get(tenant, 0.0)
        if rate and len(windows) > 1:
            while self._other_next[tenant] <= now:  # other apps' writes, admitted under their own limits
                windows[1].admitted.append(self._other_next[tenant])
                self._other_next[tenant] += 1 / rate
        every = windows + ([self.global_window] if self.global_window is not None else [])
        wait = max(window.wait_s(now) for window in every)
        if self.global_window is not None and self.global_window.wait_s(now):
            self.refused_by_global += 1
        if wait == 0:
            for window in every:
                window.admitted.append(now)
        return wait

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
        self.attempts.setdefault(tenant, []).append(now)
        wait = self._admit(tenant, now)
        if wait:
            self.throttled_total += 1
            return 429, self._retry_after(wait, now), error_body("TooManyRequests")
        self.accepted.setdefault(tenant, []).append(now)
        parts = url.split("/")
        if parts[-1] == "syncNow" or (method == "POST" and "syncType" in body):
            key = (tenant, parts[-2])
            self.syncs[key] = self.syncs.get(key, 0) + 1
            return 204, {}, None
        self.objects.setdefault((tenant, parts[-1]), {}).update(body)
        return 204, {}, None

    def _retry_after(self, wait_s: float, now: float) -> dict[str, str]:
        form = next(self._forms)
        if form == "absent":
            return {}
        if form == "fractional":
            return {"retry-after": f"{wait_s:.3f}"}
        if form == "http-date":  # the next whole second after the wait, as the emulator writes it
            when = VIRTUAL_EPOCH + dt.timedelta(seconds=math.floor(now + wait_s) + 1)
            return {"retry-after": format_datetime(when, usegmt=True)}
        return {"retry-after": str(math.ceil(wait_s))}
