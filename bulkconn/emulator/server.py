"""The emulator's HTTPS server: Graph, identity and admin routes on one loopback port.

Use it in-process as an async context manager (:class:`Emulator`), in a background thread
(:class:`EmulatorThread`, for synchronous callers), or from ``bulkconn emulator serve``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from bulkconn.emulator import hostile, identity
from bulkconn.emulator.batch import handle_batch
from bulkconn.emulator.core import EmulatorCore, SubRequest, SubResponse
from bulkconn.emulator.graph import handle
from bulkconn.emulator.options import EmulatorOptions
from bulkconn.emulator.tls import ensure_tls

GRAPH_VERSIONS = frozenset({"v1.0", "beta"})


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers=headers or {}, content_type="application/json")


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


class _Handlers:
    def __init__(self, core: EmulatorCore) -> None:
        self.core = core

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        if segments and segments[0] == "_emulator":
            return await self.admin(request, segments[1:])
        if segments and (version := segments[0].lower()) in GRAPH_VERSIONS:
            return await self.graph(request, version, "/" + "/".join(segments[1:]))
        if len(segments) >= 2 and segments[1] in ("v2.0", "oauth2"):
            return await self.identity(request, segments)
        rid = str(uuid.uuid4())
        req = SubRequest(request.method, request.path, {}, {}, request_id=rid, client_request_id=rid)
        bad = segments[0] if segments else ""
        return self._render(self.core.error(404, "ResourceNotFound", f"Invalid version: {bad}", req), req)

    # -- Graph ----------------------------------------------------------------------------------
    def _render(self, response: SubResponse, req: SubRequest) -> web.Response:
        headers = self.core.standard_headers(req.request_id, req.client_request_id)
        headers.update(response.headers)
        if response.body is None:
            headers.pop("Content-Type", None)
            return web.Response(status=response.status, headers=headers)
        return web.Response(status=response.status, body=orjson.dumps(response.body), headers=headers)

    async def graph(self, request: web.Request, version: str, path: str) -> web.StreamResponse:
        core = self.core
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id", "")
        if not client_request_id:
            core.stats.client_request_ids_missing += 1
        core.stats.user_agents[request.headers.get("User-Agent", "")] += 1
        if request.transport is not None:
            core.stats.connections.add(str(request.transport.get_extra_info("peername")))
        raw = await request.read()
        req = SubRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            request_id=request_id,
            client_request_id=client_request_id,
            version=version,
        )
        if raw:
            try:
                req.body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                req.body_invalid = True
        principal = core.check_token(request.headers.get("Authorization"))
        if isinstance(principal, str):
            challenge = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'
            return self._render(
                core.error(401, "InvalidAuthenticationToken", principal, req, headers={"WWW-Authenticate": challenge}),
                req,
            )
        core.stats.tenant_user_agents[principal.tenant.alias][request.headers.get("User-Agent", "")] += 1
        faults = core.faults_for(principal.tenant)
        if faults.latency_ms or faults.jitter_ms:
            delay_ms = faults.latency_ms + core.fault_rng.random() * faults.jitter_ms
            await asyncio.sleep(delay_ms / 1000 * core.options.time_scale)
        base_headers = core.standard_headers(req.request_id, req.client_request_id)
        if (instead := await hostile.proxy_answer(core, request, faults, base_headers)) is not None:
            return instead
        if faults.p_drop and core.fault_rng.random() < faults.p_drop:
            core.stats.faults_total += 1
            return hostile.closed(request)
        if path.lower() == "/$batch" and request.method == "POST":
            if faults.p_batch_429 and core.fault_rng.random() < faults.p_batch_429:
                core.stats.faults_total += 1
                core.stats.throttled_total += 1
                wait = core.options.window_s / 20
                response = core.error(
                    429,
                    "TooManyRequests",
                    "Please retry again later.",
                    req,
                    headers=core.retry_after_header(wait),
                )
            else:
                response = handle_batch(core, principal, req, time.monotonic())
                if response.status == 200:
                    response = hostile.damage_batch(core, faults, response)
                if faults.p_batch_garbled and core.fault_rng.random() < faults.p_batch_garbled:
                    core.stats.faults_total += 1
                    return self._garbled(response, req)
        else:
            response = handle(core, principal, req, time.monotonic())
        answer = self._render(response, req)
        return await hostile.damage(core, request, faults, answer) or answer

    def _garbled(self, response: SubResponse, req: SubRequest) -> web.Response:
        """A 200 $batch answer that lost a sub-response, repeats one, or is not JSON at all."""
        items = list(response.body["responses"])
        kind = self.core.fault_rng.choice(("drop", "duplicate", "not-json"))
        if kind == "not-json" or not items:
            headers = self.core.standard_headers(req.request_id, req.client_request_id)
            return web.Response(status=200, body=b'{"responses": [{"id": "1", "sta', headers=headers)
        if kind == "drop":
            items.pop()
        else:
            items.append(items[0])
        return self._render(SubResponse(200, response.headers, {"responses": items}), req)

    # -- identity -------------------------------------------------------------------------------
    async def identity(self, request: web.Request, segments: list[str]) -> web.Response:
        tenant = segments[0]
        rest = "/".join(segments[1:])
        if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return _json(*identity.discovery(self.core, tenant))
        if request.method == "POST" and rest in ("oauth2/v2.0/token", "oauth2/v2.0/devicecode"):
            form = {k: str(v) for k, v in (await request.post()).items()}
            if rest.endswith("token"):
                return _json(*await self._token(tenant, form))
            return _json(*identity.device_authorization(self.core, tenant, form))
        return _json(*identity.entra_error(404, "invalid_request", 90010, f"The endpoint '{rest}' is not supported."))

    async def _token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """A token answer, held back ``token_latency_ms`` without blocking the loop; counts the overlap."""
        stats = self.core.stats
        stats.token_requests_in_flight += 1
        stats.max_concurrent_token_requests = max(stats.max_concurrent_token_requests, stats.token_requests_in_flight)
        try:
            if self.core.options.token_latency_ms:
                await asyncio.sleep(self.core.options.token_latency_ms / 1000)
            return identity.token(self.core, tenant, form)
        finally:
            stats.token_requests_in_flight -= 1

    # -- admin ----------------------------------------------------------------------------------
    async def admin(self, request: web.Request, segments: list[str]) -> web.Response:
        if not _is_loopback(request):
            return _json(403, {"error": "admin endpoints answer loopback clients only"})
        core = self.core
        route = (request.method, "/".join(segments))
        if route == ("GET", "state"):
            return _json(200, _public_state(core))
        if route == ("GET", "stats"):
            return _json(200, core.stats_json())
        if route == ("GET", "tokens"):
            # Loopback only, like every admin route: the emulator's own test credentials, for leak tests.
            return _json(200, {"issued": core.issued, "client_assertions": core.assertions})
        if route == ("POST", "reset"):
            core.reset()
            return _json(200, {"reset": True})
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _json(400, {"error": "the body is not JSON"})
        if route == ("GET", "limits"):
            return _json(200, core.limits_json())
        if route == ("POST", "limits"):
            return _limits_control(core, body)
        if route == ("POST", "tokens"):
            return _json(200, _token_control(core, body))
        if route == ("POST", "device/approve"):
            ok = identity.approve_device_code(core, str(body.get("user_code", "")), str(body.get("user", "admin")))
            return _json(200 if ok else 404, {"approved": ok})
        return _json(404, {"error": f"no admin route {request.method} /_emulator/{route[1]}"})


def _limits_control(core: EmulatorCore, body: Any) -> web.Response:
    """``{"tenant": ALIAS or absent for all, "writes_per_app": 40, "window_s": 2, ...}``: new limits from now on."""
    if not isinstance(body, dict):
        return _json(400, {"error": "expected a JSON object"})
    tenant = body.get("tenant")
    overrides = {k: v for k, v in body.items() if k != "tenant"}
    try:
        return _json(200, core.set_limits(None if tenant is None else str(tenant), overrides))
    except ValueError as exc:
        return _json(400, {"error": str(exc)})


def _token_control(core: EmulatorCore, body: dict[str, Any]) -> dict[str, Any]:
    """Revoke every token issued so far (optionally for one tenant) or cap token age (early expiry)."""
    if body.get("revoke"):
        now = time.time()
        for tenant in core.world.tenants.values():
            if body.get("tenant") in (None, tenant.alias, tenant.tenant_id, tenant.domain):
                core.revoked_before[tenant.tenant_id] = now
    if "max_age_s" in body:
        core.max_token_age_s = None if body["max_age_s"] is None else float(body["max_age_s"])
    return {"revoked_before": core.revoked_before, "max_age_s": core.max_token_age_s}


def _public_state(core: EmulatorCore) -> dict[str, Any]:
    """Every tenant's objects (one key per collection that holds or held objects) and app ids, without secrets."""
    return {
        "tenants": {
            t.alias: {
                "tenant_id": t.tenant_id,
                "domain": t.domain,
                "apps": {
                    a.client_id: {"display_name": a.display_name, "roles": sorted(a.roles)} for a in t.apps.values()
                },
                "exchangeConnectors": {c["id"]: dict(c) for c in t.connectors.values()},
            }
            | {name: {o["id"]: dict(o) for o in objs.values()} for name, objs in sorted(t.objects.items())}
            for t in core.world.tenants.values()
        }
    }


class Emulator:
    """The emulator as an async context manager: ``async with Emulator(opts) as emu: emu.base_url``."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if self.options.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bulkconn-emulator-")
            self.state_dir = Path(self._tmp.name)
        else:
            self.state_dir = self.options.state_dir
        self.tls = ensure_tls(self.state_dir)
        self.core = EmulatorCore(self.options, self.state_dir)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return self.core.base_url

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", _Handlers(self.core).dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port, ssl_context=self.tls.server_context())
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        host = self.options.host if ":" not in self.options.host else f"[{self.options.host}]"
        self.core.base_url = f"https://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- conveniences for tests and the demo -----------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self.core.stats_json()

    def state(self) -> dict[str, Any]:
        return _public_state(self.core)

    def tokens(self) -> dict[str, list[str]]:
        """Every token issued and client assertion received so far (as ``GET /_emulator/tokens``)."""
        return {"issued": list(self.core.issued), "client_assertions": list(self.core.assertions)}

    def revoke_tokens(self, tenant: str | None = None) -> None:
        _token_control(self.core, {"revoke": True, "tenant": tenant})

    def set_limits(self, tenant: str | None = None, **limits: float) -> dict[str, Any]:
        """Change throttling limits from now on (as ``POST /_emulator/limits``); ``tenant=None`` changes all.

        Names: ``window_s``, ``writes_per_app``, ``writes_per_tenant``, ``any_per_app``, ``any_per_tenant``,
        ``global_per_app``. Call it on the emulator's loop (in-process tests); from another thread, use the
        HTTP endpoint. Raises ``ValueError`` for an unknown tenant or limit.
        """
        return self.core.set_limits(tenant, limits)

    def limits(self) -> dict[str, Any]:
        """The limits in force, per tenant, and Graph's global limit (as ``GET /_emulator/limits``)."""
        return self.core.limits_json()


class EmulatorThread:
    """Run an :class:`Emulator` on its own event loop in a daemon thread (``with`` block)."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.emulator = Emulator(options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="bulkconn-emulator", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        # asyncio.Runner cancels handlers still running at the end (a client that went away mid-latency).
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.emulator.stop()

    def __enter__(self) -> Emulator:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
