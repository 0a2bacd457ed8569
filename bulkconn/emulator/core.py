"""Shared emulator state and the wire shapes every handler uses (OData errors, standard headers).

The handlers in :mod:`graph`, :mod:`batch` and :mod:`identity` are functions over one
:class:`EmulatorCore`; nothing here touches sockets.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jwt
import orjson

from bulkconn.emulator.options import EmulatorOptions, Faults, RetryAfterFormat
from bulkconn.emulator.state import Tenant, World, generate_world, load_world
from bulkconn.emulator.throttling import GlobalThrottle, Limits, TenantThrottle
from bulkconn.private import write_private

MISSING: Any = object()
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
_AGS = orjson.dumps(
    {
        "ServerInfo": {
            "DataCenter": "Loopback",
            "Slice": "E",
            "Ring": "0",
            "ScaleUnit": "000",
            "RoleInstance": "BULKCONN-EMULATOR",
        }
    }
).decode()


@dataclass(slots=True)
class Principal:
    """Who a valid Graph token speaks for."""

    tenant: Tenant
    app_id: str
    permissions: frozenset[str]
    delegated: bool


@dataclass(slots=True)
class SubRequest:
    """One Graph request, direct or from inside a ``$batch``; ``body`` is parsed JSON or MISSING."""

    method: str
    path: str  # below the version, e.g. "/deviceManagement/exchangeConnectors/abc"
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: Any = MISSING
    body_invalid: bool = False
    request_id: str = ""
    client_request_id: str = ""
    version: str = "v1.0"


@dataclass(slots=True)
class SubResponse:
    """A status, headers and an optional JSON body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(slots=True)
class CollectionStats:
    """What one tenant did to one collection: writes received, changes applied, actions by object."""

    writes: int = 0  # POST, PATCH, DELETE and actions received, throttled or not
    patches: int = 0
    creates: int = 0
    deletes: int = 0
    actions: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # name -> id -> n

    def to_json(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "patches": self.patches,
            "creates": self.creates,
            "deletes": self.deletes,
            "actions": {name: dict(by_id) for name, by_id in sorted(self.actions.items())},
        }


@dataclass(slots=True)
class Stats:
    """Counters the tests and benchmarks read through ``/_emulator/stats``."""

    requests_total: int = 0
    writes_total: int = 0
    throttled_total: int = 0
    batches_total: int = 0
    faults_total: int = 0
    cross_tenant_attempts: int = 0
    token_requests: Counter[str] = field(default_factory=Counter)  # tenant alias -> count
    token_failures: Counter[str] = field(default_factory=Counter)
    token_requests_in_flight: int = 0  # token answers being prepared or held back by token_latency_ms now
    max_concurrent_token_requests: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # tenant alias -> Graph requests
    writes: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    syncs: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    patches: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    user_agents: Counter[str] = field(default_factory=Counter)
    # tenant alias -> User-Agent -> authenticated Graph requests: which client (a shard, say) wrote a tenant
    tenant_user_agents: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    client_request_ids_missing: int = 0
    connections: set[str] = field(default_factory=set)  # client (address, port) pairs seen by Graph routes
    faults: Counter[str] = field(default_factory=Counter)  # fault kind -> times injected
    # tenant alias -> collection -> counters
    collections: defaultdict[str, defaultdict[str, CollectionStats]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(CollectionStats))
    )


def imf_date(when: dt.datetime | None = None) -> str:
    """An HTTP date (IMF-fixdate)."""
    return format_datetime(when or dt.datetime.now(dt.UTC), usegmt=True)


def graph_date() -> str:
    """``innerError.date``: no timezone, no fraction, as live Graph writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class EmulatorCore:
    """Everything the emulator knows and counts."""

    def __init__(self, options: EmulatorOptions, state_dir: Path) -> None:
        self.options = options
        self.state_dir = state_dir
        self.world: World = self._initial_world()
        self.stats = Stats()
        self.fault_rng = random.Random(options.seed)
        self.batch_seq = 0
        self.base_url = ""  # set once the socket is bound
        self.throttles: dict[str, TenantThrottle] = {}
        self.limits: dict[str, Limits] = {}  # tenant id -> limits changed at run time
        self.global_throttle = GlobalThrottle(per_app=options.global_per_app, window_s=options.global_window_s)
        self.retry_after_seq = 0
        self.origin = time.monotonic()  # stats' *_s fields count from here
        self.token_key = self._token_key()
        self.revoked_before: dict[str, float] = {}  # tenant id -> tokens issued before are invalid
        self.max_token_age_s: float | None = options.token_max_age_s  # older tokens are refused (early expiry)
        self.device_codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        # Every credential that crossed the identity endpoint, for leak tests (GET /_emulator/tokens): tokens
        # issued (access, refresh, id) and client assertions received. Kept across resets, as the tokens stay valid.
        self.issued: list[str] = []
        self.assertions: list[str] = []

    # -- setup -------------------------------------------------------------------------------
    def _initial_world(self) -> World:
        opts = self.options
        if opts.world_file is not None:
            return load_world(opts.world_file)
        return generate_world(
            tenants=opts.tenants,
            connectors_per_tenant=opts.connectors_per_tenant,
            seed=opts.seed,
            sizes=opts.seeded_sizes(),
            shared_app=opts.shared_app,
        )

    def _token_key(self) -> bytes:
        path = self.state_dir / "token-signing.key"
        if path.exists():
            return path.read_bytes()
        key = secrets.token_bytes(32)
        write_private(path, key)
        return key

    def reset(self) -> None:
        """Back to the initial data and zero counters (tokens stay valid)."""
        self.world = self._initial_world()
        self.stats = Stats()
        self.fault_rng = random.Random(self.options.seed)
        self.batch_seq = 0
        self.throttles.clear()
        self.limits.clear()
        self.global_throttle = GlobalThrottle(
            per_app=self.options.global_per_app, window_s=self.options.global_window_s
        )
        self.retry_after_seq = 0
        self.origin = time.monotonic()
        self.revoked_before.clear()
        self.max_token_age_s = self.options.token_max_age_s

    # -- lookups -----------------------------------------------------------------------------
    def throttle_for(self, tenant: Tenant) -> TenantThrottle:
        throttle = self.throttles.get(tenant.tenant_id)
        if throttle is None:
            limits = self.limits_for(tenant)
            throttle = self.throttles[tenant.tenant_id] = TenantThrottle.from_limits(limits, origin=self.origin)
        return throttle

    def limits_for(self, tenant: Tenant) -> Limits:
        """The limits in force for a tenant: changed at run time, else ``tenant_limits``, else the defaults."""
        if tenant.tenant_id in self.limits:
            return self.limits[tenant.tenant_id]
        base = self.options.limits()
        for key in (tenant.alias, tenant.tenant_id, tenant.domain):
            if key in self.options.tenant_limits:
                return base.with_overrides(self.options.tenant_limits[key])
        return base

    def set_limits(self, tenant: str | None, overrides: Mapping[str, float]) -> dict[str, Any]:
        """Change the limits of one tenant (alias, id or domain) or of all, from now on.

        ``global_per_app`` changes Graph's global limit. Raises ``ValueError`` (unknown tenant or limit).
        """
        changes = dict(overrides)
        if "global_per_app" in changes:
            value = changes.pop("global_per_app")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit global_per_app must be a positive number, not {value!r}")
            self.global_throttle.apply(per_app=int(value))
        chosen = [t for t in self.world.tenants.values() if tenant in (None, t.alias, t.tenant_id, t.domain)]
        if not chosen:
            raise ValueError(f"no tenant {tenant!r}")
        updated = {t.tenant_id: self.limits_for(t).with_overrides(changes) for t in chosen}
        for tenant_id, limits in updated.items():
            self.limits[tenant_id] = limits
            if tenant_id in self.throttles:
                self.throttles[tenant_id].apply(limits)
        return self.limits_json()

    def limits_json(self) -> dict[str, Any]:
        return {
            "tenants": {t.alias: self.limits_for(t).to_json() for t in self.world.tenants.values()},
            "global_per_app": self.global_throttle.per_app,
            "global_window_s": self.global_throttle.window_s,
        }

    def faults_for(self, tenant: Tenant | None) -> Faults:
        if tenant is not None:
            for key in (tenant.alias, tenant.tenant_id, tenant.domain):
                if key in self.options.tenant_faults:
                    return self.options.tenant_faults[key]
        return self.options.faults

    def graph_audiences(self) -> frozenset[str]:
        return frozenset({"https://graph.microsoft.com", GRAPH_APP_ID, self.base_url})

    # -- tokens --------------------------------------------------------------------------------
    def issue_access_token(
        self, tenant: Tenant, app_id: str, *, audience: str, roles: frozenset[str], user: str | None = None
    ) -> tuple[str, int]:
        now = time.time()
        lifetime = self.options.token_lifetime_s
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + lifetime,
            "appid": app_id,
            "tid": tenant.tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.tenant_id}/{app_id}/{user}")),
            "jti": uuid.uuid4().hex,
            "ver": "1.0",
            "iat_precise": now,
        }
        if user is None:
            claims["roles"] = sorted(roles)
            claims["idtyp"] = "app"
        else:
            claims["scp"] = " ".join(sorted(roles))
            claims["upn"] = user
        token = jwt.encode(claims, self.token_key, algorithm="HS256")
        self.issued.append(token)
        return token, lifetime

    def check_token(self, header: str | None) -> Principal | str:
        """A :class:`Principal`, or the Graph 401 message explaining why not."""
        if not header:
            return "Access token is empty."
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Access token is empty."
        try:
            claims = jwt.decode(
                token.strip(),
                self.token_key,
                algorithms=["HS256"],
                audience=list(self.graph_audiences()),
                options={"require": ["exp", "tid", "appid", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return "Lifetime validation failed, the token is expired."
        except jwt.InvalidAudienceError:
            return "Invalid audience."
        except jwt.PyJWTError:
            return "CompactToken parsing failed with error code: 80049217"
        tenant = self.world.tenants.get(str(claims["tid"]))
        if tenant is None:
            return "Access token validation failure. Invalid tenant."
        issued = float(claims.get("iat_precise", claims.get("iat", 0)))
        if issued < self.revoked_before.get(tenant.tenant_id, 0.0):
            return "Lifetime validation failed, the token is expired."
        if self.max_token_age_s is not None and time.time() - issued > self.max_token_age_s:
            return "Lifetime validation failed, the token is expired."
        delegated = "scp" in claims
        perms = frozenset(str(claims["scp"]).split()) if delegated else frozenset(claims.get("roles", []))
        return Principal(tenant, str(claims["appid"]), perms, delegated)

    # -- wire shapes ---------------------------------------------------------------------------
    def error(
        self,
        status: int,
        code: str,
        message: str,
        req: SubRequest,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> SubResponse:
        """An OData error; Intune-style (``_version: 3`` JSON string) when that option is on."""
        if self.options.intune_errors and status != 401:
            message = orjson.dumps(
                {
                    "_version": 3,
                    "Message": f"{message} - Operation ID (for customer support): "
                    f"00000000-0000-0000-0000-000000000000 - Activity ID: {req.request_id} - "
                    f"Url: https://fef.emulator.manage.microsoft.com/DeviceManagement{req.path}"
                    "?api-version=5024-01-01",
                    "CustomApiErrorPhrase": "",
                    "RetryAfter": None,
                    "ErrorSourceService": "",
                    "HttpHeaders": "{}",
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        inner: dict[str, Any] = {
            "date": graph_date(),
            "request-id": req.request_id,
            "client-request-id": req.client_request_id,
        }
        if status == 429:
            inner.update({"code": "429", "message": "Please retry after", "status": "429"})
        body = {"error": {"code": code, "message": message, "innerError": inner}}
        out = {"Content-Type": "application/json"}
        out.update(headers or {})
        return SubResponse(status, out, body)

    def retry_after_header(self, wait_s: float) -> dict[str, str]:
        """``Retry-After`` for a wait of ``wait_s`` real seconds, in the configured format.

        With a time scale other than 1, whole seconds cannot express a scaled wait, so the
        ``seconds`` format writes the scaled value of the rounded-up unscaled wait.
        """
        fmt = self.options.retry_after
        if cycle := self.options.retry_after_cycle:
            fmt = cycle[self.retry_after_seq % len(cycle)]
            self.retry_after_seq += 1
        scale = self.options.time_scale
        if fmt is RetryAfterFormat.ABSENT:
            return {}
        if fmt is RetryAfterFormat.FRACTIONAL:
            return {"Retry-After": f"{max(wait_s, 0.001):.3f}"}
        if fmt is RetryAfterFormat.HTTP_DATE:
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait_s)
            # An HTTP date has whole-second resolution: round up so the client never comes early.
            when = when.replace(microsecond=0) + dt.timedelta(seconds=1)
            return {"Retry-After": imf_date(when)}
        whole = -(-wait_s / scale // 1)  # ceil in emulated seconds
        whole = max(whole, 1)
        if scale == 1.0:
            return {"Retry-After": str(int(whole))}
        return {"Retry-After": f"{whole * scale:.3f}"}

    def standard_headers(self, request_id: str, client_request_id: str) -> dict[str, str]:
        return {
            "request-id": request_id,
            "client-request-id": client_request_id or request_id,
            "x-ms-ags-diagnostic": _AGS,
            "Date": imf_date(),
            "Strict-Transport-Security": "max-age=31536000",
        }

    def stats_json(self) -> dict[str, Any]:
        s = self.stats
        tenants: dict[str, Any] = {}
        for tenant in self.world.tenants.values():
            throttle = self.throttles.get(tenant.tenant_id)
            entry: dict[str, Any] = {
                "tenant_id": tenant.tenant_id,
                "requests": s.requests[tenant.alias],
                "writes": s.writes[tenant.alias],
                "throttled": s.throttled[tenant.alias],
                "token_requests": s.token_requests[tenant.alias],
                "token_failures": s.token_failures[tenant.alias],
                "syncs": dict(s.syncs[tenant.alias]),
                "patches": dict(s.patches[tenant.alias]),
                "user_agents": dict(s.tenant_user_agents[tenant.alias]),
                "collections": {name: c.to_json() for name, c in sorted(s.collections[tenant.alias].items())},
            }
            if throttle is None:
                throttle = TenantThrottle.from_limits(self.limits_for(tenant), origin=self.origin)
            entry.update(throttle.stats())
            tenants[tenant.alias] = entry
        return {
            "requests_total": s.requests_total,
            "writes_total": s.writes_total,
            "throttled_total": s.throttled_total,
            "batches_total": s.batches_total,
            "faults_total": s.faults_total,
            "cross_tenant_attempts": s.cross_tenant_attempts,
            "client_request_ids_missing": s.client_request_ids_missing,
            "connections_total": len(s.connections),
            "token_requests": {a: s.token_requests[a] for a in tenants},
            "max_concurrent_token_requests": s.max_concurrent_token_requests,
            "user_agents": dict(s.user_agents),
            "faults": dict(s.faults),
            "global": self.global_throttle.stats(),
            "tenants": tenants,
        }
