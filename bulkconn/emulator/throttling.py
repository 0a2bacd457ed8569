"""Intune's and Graph's sliding-window throttling, counted exactly as the server counts it (docs/service-facts.md §2).

Each documented limit is its own sliding window (Intune's service limits and Graph's global limit): per tenant, writes per app, writes for all apps, any
request per app and any request for all apps, each per ``window_s``; and Graph's global limit per app across
every tenant (:class:`GlobalThrottle`). A window spans ``(now - window_s, now]``: an event exactly
``window_s`` old has left it. A request is admitted only when every window that applies has room; otherwise
the answer is how long until the fullest of them admits it. Only admitted requests occupy a window (a retry
exactly at Retry-After then succeeds). Write attempts, admitted or not, are metered separately
(:class:`WriteMeter`) so tests can see whether a client ever sent more than the limit, and how full it kept
each window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

# Graph's global limit: 130,000 requests per 10 s per app across all tenants.
GLOBAL_PER_APP = 130_000
GLOBAL_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The four per-tenant Intune limits and the length of their window, in real seconds."""

    window_s: float = 20.0
    writes_per_app: int = 100
    writes_per_tenant: int = 200
    any_per_app: int = 1000
    any_per_tenant: int = 2000

    def with_overrides(self, overrides: Mapping[str, float]) -> Limits:
        """A copy with some fields changed; ``ValueError`` names an unknown field or a value out of range."""
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                raise ValueError(f"unknown limit {name!r}; expected one of {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit {name} must be a positive number, not {value!r}")
            if name != "window_s" and value != int(value):
                raise ValueError(f"limit {name} must be a whole number, not {value!r}")
            changes[name] = float(value) if name == "window_s" else int(value)
        return replace(self, **changes)

    def to_json(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Window:
    """Timestamps of admitted events inside one sliding window, and the peak ever seen."""

    limit: int
    length_s: float
    events: deque[float] = field(default_factory=deque)
    peak: int = 0

    def _prune(self, now: float) -> None:
        cutoff = now - self.length_s
        while self.events and self.events[0] <= cutoff:
            self.events.popleft()

    def count(self, now: float) -> int:
        """Events inside the window ending at ``now``."""
        self._prune(now)
        return len(self.events)

    def wait_s(self, now: float) -> float:
        """0 when there is room now, else the seconds until there is."""
        self._prune(now)
        if len(self.events) < self.limit:
            return 0.0
        oldest_blocking = self.events[len(self.events) - self.limit]
        return max(oldest_blocking + self.length_s - now, 0.001)

    def add(self, now: float) -> None:
        self._prune(now)
        self.events.append(now)
        self.peak = max(self.peak, len(self.events))


@dataclass(slots=True)
class WriteMeter:
    """What one app (or a whole tenant) sent and what the server admitted, for the stats.

    ``attempts`` holds every write received in the trailing window, admitted or not: whenever it holds more
    than the limit in force, the client sent more than the server allows and ``windows_over_limit`` grows.
    ``window_counts`` are admitted writes per consecutive window of ``length_s`` from the first admitted write
    (the last one may be partial), for utilisation and medians.
    """

    limit: int
    length_s: float
    attempts: deque[float] = field(default_factory=deque)
    max_attempts: int = 0
    windows_over_limit: int = 0
    writes_total: int = 0
    admitted: int = 0
    throttled: int = 0
    first_admitted: float | None = None
    last_admitted: float | None = None
    window_counts: list[int] = field(default_factory=list)

    def attempt(self, now: float) -> None:
        cutoff = now - self.length_s
        while self.attempts and self.attempts[0] <= cutoff:
            self.attempts.popleft()
        self.attempts.append(now)
        self.writes_total += 1
        self.max_attempts = max(self.max_attempts, len(self.attempts))
        if len(self.attempts) > self.limit:
            self.windows_over_limit += 1

    def admit(self, now: float) -> None:
        self.admitted += 1
        if self.first_admitted is None:
            self.first_admitted = now
        self.last_admitted = now
        index = int((now - self.first_admitted) // self.length_s)
        self.window_counts.extend([0] * (index + 1 - len(self.window_counts)))
        self.window_counts[index] += 1

    def stats(self, peak: int, origin: float) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "window_s": self.length_s,
            "max_writes_in_window": peak,
            "max_write_attempts_in_window": self.max_attempts,
            "windows_over_limit": self.windows_over_limit,
            "writes_total": self.writes_total,
            "writes_admitted": self.admitted,
            "writes_throttled": self.throttled,
            "first_write_s": None if self.first_admitted is None else round(self.first_admitted - origin, 6),
            "last_write_s": None if self.last_admitted is None else round(self.last_admitted - origin, 6),
            "window_counts": list(self.window_counts),
        }


@dataclass(slots=True)
class TenantThrottle:
    """The windows of one tenant and its apps, under ``limits`` (changed at run time by :meth:`apply`)."""

    limits: Limits
    origin: float = 0.0  # the clock reading that stats' *_s fields count from
    writes: Window = field(init=False)
    anything: Window = field(init=False)
    tenant_meter: WriteMeter = field(init=False)
    app_writes: dict[str, Window] = field(default_factory=dict)
    app_any: dict[str, Window] = field(default_factory=dict)
    app_meters: dict[str, WriteMeter] = field(default_factory=dict)
    app_throttled: dict[str, int] = field(default_factory=dict)  # requests of any kind refused, per app

    def __post_init__(self) -> None:
        self.writes = Window(self.limits.writes_per_tenant, self.limits.window_s)
        self.anything = Window(self.limits.any_per_tenant, self.limits.window_s)
        self.tenant_meter = WriteMeter(self.limits.writes_per_tenant, self.limits.window_s)

    @classmethod
    def from_limits(cls, limits: Limits, *, origin: float = 0.0) -> TenantThrottle:
        return cls(limits, origin=origin)

    def apply(self, limits: Limits) -> None:
        """Change the limits in force now; events already admitted stay in their windows."""
        self.limits = limits
        pairs: list[tuple[Window | WriteMeter, int]] = [
            (self.writes, self.limits.writes_per_tenant),
            (self.anything, self.limits.any_per_tenant),
            (self.tenant_meter, self.limits.writes_per_tenant),
        ]
        pairs += [(w, self.limits.writes_per_app) for w in self.app_writes.values()]
        pairs += [(w, self.limits.any_per_app) for w in self.app_any.values()]
        pairs += [(m, self.limits.writes_per_app) for m in self.app_meters.values()]
        for window, limit in pairs:
            window.limit, window.length_s = limit, self.limits.window_s

    def _app(self, table: dict[str, Window], app: str, limit: int) -> Window:
        window = table.get(app)
        if window is None:
            window = table[app] = Window(limit, self.limits.window_s)
        return window

    def _meter(self, app: str) -> WriteMeter:
        meter = self.app_meters.get(app)
        if meter is None:
            meter = self.app_meters[app] = WriteMeter(self.limits.writes_per_app, self.limits.window_s)
        return meter

    def admit(self, app: str, *, is_write: bool, now: float, also: Sequence[Window] = ()) -> float:
        """Admit one request (return 0) or return the seconds until it would be admitted.

        ``also`` adds windows kept elsewhere (Graph's global limit per app) that must have room too.
        """
        windows = [self.anything, self._app(self.app_any, app, self.limits.any_per_app), *also]
        meters: list[WriteMeter] = []
        if is_write:
            meters = [self.tenant_meter, self._meter(app)]
            for meter in meters:
                meter.attempt(now)
            windows += [self.writes, self._app(self.app_writes, app, self.limits.writes_per_app)]
        wait = max(w.wait_s(now) for w in windows)
        if wait > 0:
            self.app_throttled[app] = self.app_throttled.get(app, 0) + 1
            for meter in meters:
                meter.throttled += 1
            return wait
        for window in windows:
            window.add(now)
        for meter in meters:
            meter.admit(now)
        return 0.0

    def stats(self) -> dict[str, Any]:
        apps: dict[str, Any] = {}
        for app, window in self.app_any.items():
            meter = self.app_meters.get(app) or WriteMeter(self.limits.writes_per_app, self.limits.window_s)
            peak = self.app_writes[app].peak if app in self.app_writes else 0
            apps[app] = meter.stats(peak, self.origin) | {
                "max_requests_in_window": window.peak,
                "throttled": self.app_throttled.get(app, 0),
            }
        out = self.tenant_meter.stats(self.writes.peak, self.origin)
        out.pop("limit")
        out.pop("window_s")
        return {
            **out,
            "max_requests_in_window": self.anything.peak,
            "limits": self.limits.to_json(),
            "apps": apps,
        }


@dataclass(slots=True)
class GlobalThrottle:
    """Graph's limit per app across all tenants: any request, ``per_app`` per ``window_s``."""

    per_app: int = GLOBAL_PER_APP
    window_s: float = GLOBAL_WINDOW_S
    windows: dict[str, Window] = field(default_factory=dict)

    def window(self, app: str) -> Window:
        window = self.windows.get(app)
        if window is None:
            window = self.windows[app] = Window(self.per_app, self.window_s)
        return window

    def apply(self, *, per_app: int) -> None:
        self.per_app = per_app
        for window in self.windows.values():
            window.limit = per_app

    def stats(self) -> dict[str, Any]:
        return {
            "per_app": self.per_app,
            "window_s": self.window_s,
            "apps": {app: {"max_requests_in_window": w.peak} for app, w in self.windows.items()},
        }
