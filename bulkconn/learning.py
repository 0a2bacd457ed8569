"""The real write limit, learned from 429s and probed upwards: pure arithmetic, every method takes ``now``.

:class:`Learner` holds the limit the service has shown (:class:`Learned`: writes per window) and raises it one
probe at a time while the service admits everything. :class:`~bulkconn.limits.TenantLimits` feeds it the
estimates it reads from 429s. docs/pacing.md explains the rules and the figures measured.

While the window's length is in doubt (learned other than configured), probes shorten it by a step that starts
small (a measured window is usually close) and grows while shorter windows hold; a window measured from an
HTTP date (whole seconds) is probed halfway to a second shorter. The first window probe that fails settles the
window one small step above the last that held (that step is the cushion for latency jitter). Then the limit is
probed upwards: on the configured window, straight to the configured limit (sent in small requests, one at a
time beyond what held), and a refusal leaves it at what the service admitted in its window; on a shorter window,
with a growing step. A probe that fails reverts, and the next limit probe waits until the pause the failure
cost is small against the time between probes.
"""

from __future__ import annotations

import math
from collections import deque

from msgspec import Struct

PROBE_AFTER_WINDOWS = 3.0  # learned windows without a 429 before the first probe
PROBE_FIRST_STEP = 0.05  # the first probe adds 5 % of the learned limit; each success doubles the step
MAX_STEP = 0.25  # the largest probe step (a share of the learned limit)
MIN_WINDOW_S = 0.05  # the shortest window a probe or an estimate may reach
RESOLUTION_S = 1.0  # a Retry-After as an HTTP date is up to this much late (whole seconds, rounded up)
SETTLED = 0.05  # a window settles this share above the last that held
WINDOW_STEP = 0.10  # the largest step a probe of a measured window takes (a share of the window)
PROBE_COST_FACTOR = 20.0  # a limit probe waits 20 times the pause the last failed probe cost: at most 5 % lost


class Learned(Struct, frozen=True):
    """The write limit the service has shown: ``per_window`` writes per ``window_s`` seconds."""

    per_window: int
    window_s: float


class Learner:
    """The real write limit, learned from 429s and probed upwards while the service admits everything.

    A probe raises the rate: a shorter window while the window is in doubt, else more writes per window (the
    configured limit on the configured window, one step on another). A probe that holds for a window doubles the
    next step; a 429 for a request sent under a probe reverts to the values from before it, or, for the configured
    limit, to what the service admitted.
    """

    __slots__ = (
        "_episode_probe",
        "_good",
        "_history",
        "_probe_at",
        "_probe_pause_s",
        "_stable_since",
        "_step",
        "_undo",
        "_window_dated",
        "_window_doubt",
        "_window_floor",
        "_window_measured",
        "configured",
        "learned",
        "reorder_s",
    )

    def __init__(self, configured: Learned, *, reorder_s: float = 0.0) -> None:
        self.configured = configured
        self.reorder_s = reorder_s  # a request sent this long before a probe may arrive after the probe's writes
        self.learned: Learned | None = None
        self._good: Learned | None = None
        self._probe_at: float | None = None
        self._stable_since = 0.0
        self._step = PROBE_FIRST_STEP
        self._episode_probe = False
        self._window_doubt = False
        self._window_measured = False
        self._window_dated = False  # the window was measured from an HTTP date: its floor is a second shorter
        self._window_floor = MIN_WINDOW_S  # no window probe goes below this (a bound found without Retry-After)
        self._undo: list[Learned] = []  # what held before each probe that stands, the latest last
        self._probe_pause_s = 0.0  # the pause the last failed probe cost
        # (probe time, values before it, whether it shortened the window) for the probes not yet settled.
        self._history: deque[tuple[float, Learned, bool]] = deque(maxlen=32)

    @property
    def probe_chunk(self) -> int | None:
        """While a probe is unconfirmed, the largest batch to send: a failing probe then costs a few writes."""
        if self._probe_at is None or self._good is None or self.learned is None:
            return None
        # Sending earlier (a shorter window) is the probe: every batch risks it, so all stay small.
        window_probe = bool(self._history) and self._history[-1][2]
        small = window_probe or self.learned == self.configured  # a jump to the configured limit: small chunks
        return max(1, math.ceil(self._good.per_window * (PROBE_FIRST_STEP if small else self._step)))

    @property
    def held(self) -> Learned | None:
        """While a probe of the configured limit is unconfirmed, the values that held before it (else None)."""
        if self._probe_at is None or self.learned != self.configured:
            return None
        return self._good

    @property
    def current(self) -> Learned:
        return self.learned or self.configured

    @property
    def episode_probe(self) -> bool:
        """The current 429 episode was a probe failing (not news about the limit)."""
        return self._episode_probe

    def note_pause(self, pause_s: float) -> None:
        """A failed probe paused the tenant this long: the next limit probe waits ``PROBE_COST_FACTOR`` times it."""
        self._probe_pause_s = max(pause_s, 0.0)

    def bounds(self, now: float, *, low_s: float, high_s: float) -> None:
        """The window is longer than ``low_s`` and at most ``high_s`` (from probing without Retry-After)."""
        self.learned = Learned(self.current.per_window, max(high_s, MIN_WINDOW_S))
        self._window_floor, self._window_measured = max(low_s, MIN_WINDOW_S), True
        self._window_dated = False
        self._window_doubt = high_s - low_s > SETTLED * high_s
        self._stable_since = now

    def stable(self, now: float) -> None:
        """An admitted write at ``now``: probe once the current values have held long enough."""
        if self.learned is None:
            return
        if self.learned == self.configured:
            if now - self._stable_since >= self.learned.window_s:
                self.learned, self._probe_at, self._undo = None, None, []  # the configured limit holds again
                self._history.clear()
            return
        window = self.learned.window_s
        if self._probe_at is not None:
            # A probe chain goes on one window at a time; a shorter window is tested only once the sends of a
            # whole window have gone out under it, so it holds for one and a half.
            wait = window * (1.5 if self._history and self._history[-1][2] else 1)
        elif self._window_doubt:
            wait = 1.5 * window  # a window measured from Retry-After is an upper bound: shortening it is safe
        else:
            wait = max(PROBE_AFTER_WINDOWS * window, PROBE_COST_FACTOR * self._probe_pause_s)
        if now - self._stable_since < wait:
            return
        if self._probe_at is not None:
            self._step = min(self._step * 2, MAX_STEP)  # the last probe held: bolder next time
        before = self.learned
        self._good, self._probe_at, self._stable_since = before, now, now
        after = self._shorter_window(before) if self._window_doubt else None
        window_probe = after is not None
        self._undo.append(before)
        if after is None:
            after = self._higher_limit(before)
        self._history.append((now, before, window_probe))
        self.learned = after

    def _shorter_window(self, current: Learned) -> Learned | None:
        """The next window to try, or None when no shorter one is left to try (the window is settled)."""
        window = current.window_s
        # A measured window is close: steady steps. One never measured shrinks faster.
        step = WINDOW_STEP if self._window_measured else min(2 * self._step, 0.5)
        target = window * (1 - step)
        if self._window_dated:  # an HTTP date's last second is in doubt: halfway to its start
            target = min(target, (window + self._window_floor) / 2)
        target = max(target, self._window_floor)
        if window - target <= SETTLED * window / 2:
            self._window_doubt = False
            return None
        return Learned(current.per_window, target)

    def _higher_limit(self, current: Learned) -> Learned | None:
        """On the configured window, the configured limit: a refusal shows the real one (see :meth:`refused`).

        On a window learned shorter, one step more writes per window, or None when that reaches the configured
        limit: there is no documented limit on that window to try.
        """
        if current.window_s >= self.configured.window_s:
            return self.configured
        raised = current.per_window + max(1, math.ceil(current.per_window * self._step))
        return Learned(min(raised, self.configured.per_window), current.window_s)

    def refused(
        self,
        now: float,
        *,
        sent_at: float,
        new_episode: bool,
        estimate: Learned,
        measured: bool,
        informed: bool = False,
        saturated: bool = False,
        admitted: int = 0,
        window_floor_s: float = MIN_WINDOW_S,
    ) -> None:
        """A 429 at ``now``: revert the probe that caused it, else take ``estimate`` (in an episode the latest wins).

        ``sent_at`` is when the refused request went out; ``new_episode`` is False for the other answers of a
        burst refused together; ``measured`` says whether a Retry-After gave the window length, ``informed``
        whether there was one at all (one that cannot be read as the window's length still says it is no
        shorter than believed: the window is in doubt only when nothing was said). ``saturated``: the refused
        request filled our window to the limit, so a window probed shorter is the first suspect, before the limit.
        """
        if new_episode:
            self._revert(sent_at, admitted)
        if not self._episode_probe:
            if measured:
                self._window_measured, self._undo = True, []
                self._window_floor = window_floor_s  # an HTTP date leaves the last second in doubt
                self._window_dated = window_floor_s > MIN_WINDOW_S
                self._window_doubt = estimate.window_s != self.configured.window_s
            elif self.learned is None and not informed:
                self._window_measured, self._window_doubt = False, True  # first 429 and no Retry-After
            elif saturated and self._undo and new_episode:
                # We filled our window and were refused: the latest probe that held may have held by luck of the
                # latency. Undo it (the rest of this episode's answers say the same).
                self.learned = self._undo.pop()
                self._window_doubt, self._episode_probe = False, True
                self._stable_since, self._step = now, PROBE_FIRST_STEP
                return
            self.learned = estimate
        self._stable_since = now
        self._step = PROBE_FIRST_STEP

    def _revert(self, sent_at: float, admitted: int) -> None:
        # The request may have gone out under any probe of the current chain: revert to what held before it.
        # Latency reorders arrivals: a request sent just before a probe may be refused for the probe's writes.
        held = [
            (before, shortened) for probe_at, before, shortened in self._history if probe_at <= sent_at + self.reorder_s
        ]
        undone = len(self._history) - len(held) + 1  # the probe the request went out under, and those after it
        self._history.clear()
        self._probe_at = None
        self._episode_probe = bool(held)
        if not held:
            return
        del self._undo[len(self._undo) - min(undone, len(self._undo)) :]
        before, window_probed = held[-1]
        probed = self.learned
        self.learned = before
        if probed == self.configured and before.window_s == probed.window_s:
            # The service admitted this much in its window before it refused: the limit is (at least) that.
            self.learned = Learned(min(max(admitted, before.per_window), probed.per_window), before.window_s)
        if window_probed:
            # The window settles a small step above the last that held: that step is the jitter cushion.
            self._window_doubt = False
            self._step = PROBE_FIRST_STEP  # the limit probes that follow start small
            self.learned = Learned(before.per_window, before.window_s * (1 + SETTLED))
