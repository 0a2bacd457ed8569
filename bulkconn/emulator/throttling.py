"""Intune's sliding-window throttling, per tenant and per app (docs/service-facts.md §2).

Four sliding windows of ``window_s`` seconds: writes per app, writes per tenant (all apps), any
request per app, any request per tenant. A request is admitted only when every window that applies
to it has room; otherwise the answer is how long until the fullest of them admits it. Only admitted
requests occupy a window (a retry exactly at Retry-After then succeeds); rejected attempts are
counted separately so tests can see whether a client ever sent more than the limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


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
class TenantThrottle:
    """The windows of one tenant and its apps."""

    window_s: float
    writes_per_app: int
    writes_per_tenant: int
    any_per_app: int
    any_per_tenant: int
    writes: Window = field(init=False)
    anything: Window = field(init=False)
    app_writes: dict[str, Window] = field(default_factory=dict)
    app_any: dict[str, Window] = field(default_factory=dict)
    write_attempts: dict[str, Window] = field(default_factory=dict)  # per app, admitted or not

    def __post_init__(self) -> None:
        self.writes = Window(self.writes_per_tenant, self.window_s)
        self.anything = Window(self.any_per_tenant, self.window_s)

    def _app(self, table: dict[str, Window], app: str, limit: int) -> Window:
        window = table.get(app)
        if window is None:
            window = table[app] = Window(limit, self.window_s)
        return window

    def admit(self, app: str, *, is_write: bool, now: float) -> float:
        """Admit one request (return 0) or return the seconds until it would be admitted."""
        windows = [self.anything, self._app(self.app_any, app, self.any_per_app)]
        if is_write:
            # The attempt window has no limit that matters; it only records what the client sent.
            self._app(self.write_attempts, app, 1 << 30).add(now)
            windows += [self.writes, self._app(self.app_writes, app, self.writes_per_app)]
        wait = max(w.wait_s(now) for w in windows)
        if wait > 0:
            return wait
        for window in windows:
            window.add(now)
        return 0.0

    def stats(self) -> dict[str, object]:
        return {
            "max_writes_in_window": self.writes.peak,
            "max_requests_in_window": self.anything.peak,
            "apps": {
                app: {
                    "max_writes_in_window": self.app_writes[app].peak if app in self.app_writes else 0,
                    "max_write_attempts_in_window": self.write_attempts[app].peak if app in self.write_attempts else 0,
                    "max_requests_in_window": window.peak,
                }
                for app, window in self.app_any.items()
            },
        }
