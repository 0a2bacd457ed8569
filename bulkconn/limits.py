"""Pure pacing arithmetic: exact sliding-window logs of our own sends, and the real limit learned from 429s.

No clock and no I/O: every method takes ``now`` (loop time, seconds) so that the pacer can run it on the
event loop and tests can run it in a discrete-event simulation. See ``docs/pacing.md``.

* :class:`SendLog` counts our own sends in a trailing window exactly (a deque of ``[time, count]``
  entries and a running sum). A send is allowed when the count over the last ``window_s + margin_s``
  plus the new requests stays within the limit. The margin is *time* (the spread of network latency
  between our clock and the service's), not a share of the limit, so a window is filled to the limit.
* :class:`TenantLimits` applies every documented limit of one tenant at once (writes per app, writes
  per tenant, any request per app, any request per tenant; each ``$batch`` sub-request counts once),
  plus the process-wide :class:`SharedLimit` (Graph's per-app limit across all tenants).
* On a 429 it learns the real write limit from what the service admitted in the trailing window and
  from ``Retry-After`` (the moment the oldest admitted request leaves the service's window), keeps a
  shared cool-down until the latest ``Retry-After`` (or, when absent, until the learned window has
  room), and probes upwards after a stable period with a growing step so a raised limit is followed
  within a few windows. An envelope-level 429 halves the batch size; stable windows double it back.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

DEFAULT_MARGIN_S = 0.25  # latency spread between our send time and the service's arrival time
PROBE_AFTER_WINDOWS = 3.0  # learned windows without a 429 before the first probe
PROBE_FIRST_STEP = 0.05  # the first probe adds 5 % of the learned limit; each success doubles the step
MIN_WINDOW_S = 0.05  # the shortest window a probe or an estimate may reach
MAX_STEP = 0.25  # the largest probe step (a share of the learned limit)
ROUNDING_S = 2.0  # an HTTP-date Retry-After can be up to this much late (whole seconds, rounded up)


class SendLog:
    """Our own sends in the trailing ``retention_s`` seconds: O(1) amortised per send.

    Entries are ``[time, count]`` in send order; the running sum is kept so that a full-window count is
    O(1). Counting a shorter span walks back from the newest entry (a few entries: one per batch).
    """

    __slots__ = ("_entries", "_total", "retention_s")

    def __init__(self, *, retention_s: float) -> None:
        self.retention_s = retention_s
        self._entries: deque[list[float]] = deque()
        self._total = 0

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention_s
        while self._entries and self._entries[0][0] <= cutoff:
            self._total -= int(self._entries.popleft()[1])

    def add(self, now: float, count: int) -> None:
        """Record ``count`` requests sent at ``now``."""
        self._prune(now)
        if count > 0:
            self._entries.append([now, float(count)])
            self._total += count

    def forget(self, count: int) -> None:
        """Remove ``count`` of the newest sends (the service refused them, so they do not occupy its window)."""
        while count > 0 and self._entries:
            newest = self._entries[-1]
            taken = min(count, int(newest[1]))
            newest[1] -= taken
            self._total -= taken
            count -= taken
            if newest[1] <= 0:
                self._entries.pop()

    def __len__(self) -> int:
        """Entries held (one per send), for memory checks."""
        return len(self._entries)

    def count_since(self, now: float, start: float) -> int:
        """Sends strictly after ``start`` (``start`` at or before the retention horizon: all of them)."""
        self._prune(now)
        if start <= now - self.retention_s:
            return self._total
        total = 0
        for when, count in reversed(self._entries):
            if when <= start:
                break
            total += int(count)
        return total

    def oldest_since(self, now: float, start: float) -> float | None:
        """Time of the oldest send strictly after ``start``, or None."""
        self._prune(now)
        oldest = None
        for when, _ in reversed(self._entries):
            if when <= start:
                break
            oldest = when
        return oldest

    def room_at(self, now: float, *, limit: int, span_s: float, count: int) -> float:
        """The earliest time >= ``now`` at which ``count`` more sends keep every ``span_s`` window within ``limit``."""
        if count > limit:
            count = limit  # a request larger than the window still goes out once the window is empty
        self._prune(now)
        excess = self.count_since(now, now - span_s) + count - limit
        if excess <= 0:
            return now
        for when, sent in self._entries:  # oldest first: wait until enough of them leave the span
            if when <= now - span_s:
                continue
            excess -= int(sent)
            if excess <= 0:
                return when + span_s
        return now  # unreachable: the entries in the span hold the whole excess


@dataclass(frozen=True, slots=True)
class Learned:
    """The write limit the service has shown: ``per_window`` writes per ``window_s`` seconds."""

    per_window: int
    window_s: float


class Learner:
    """The real write limit, learned from 429s and probed upwards while the service admits everything.

    A probe raises the rate one step: a shorter window while the window is in doubt (over-estimated from a
    rounded ``Retry-After``, or never measured), else more writes per window. A probe that holds for a window
    doubles the next step; a 429 for a request sent under a probe reverts to the values from before it.
    """

    __slots__ = (
        "_episode_probe",
        "_good",
        "_history",
        "_probe_at",
        "_shrink",
        "_stable_since",
        "_step",
        "_window_doubt",
        "_window_measured",
        "configured",
        "learned",
    )

    def __init__(self, configured: Learned) -> None:
        self.configured = configured
        self.learned: Learned | None = None
        self._good: Learned | None = None
        self._probe_at: float | None = None
        self._stable_since = 0.0
        self._step = PROBE_FIRST_STEP
        self._episode_probe = False
        self._window_doubt = False
        self._window_measured = False
        self._shrink = PROBE_FIRST_STEP
        # (probe time, values before it, whether it shortened the window) for the probes not yet settled.
        self._history: deque[tuple[float, Learned, bool]] = deque(maxlen=32)

    @property
    def probe_chunk(self) -> int | None:
        """While a probe is unconfirmed, the largest batch to send: a failing probe then costs a few writes."""
        if self._probe_at is None or self._good is None or self.learned is None:
            return None
        return max(1, math.ceil(self._good.per_window * self._step))

    @property
    def current(self) -> Learned:
        return self.learned or self.configured

    def stable(self, now: float) -> None:
        """An admitted write at ``now``: probe once the current values have held long enough."""
        if self.learned is None:
            return
        window = self.learned.window_s
        if now - self._stable_since < (1 if self._probe_at is not None else PROBE_AFTER_WINDOWS) * window:
            return
        if self._probe_at is not None:
            self._step = min(self._step * 2, MAX_STEP)  # the last probe held: bolder next time
        self._good, self._probe_at, self._stable_since = self.learned, now, now
        # The window is probed (shortened) while it is in doubt: learned other than configured, or never measured
        # because Retry-After was absent; the first window probe that fails settles it. Then the limit is probed.
        # A measured window (from Retry-After) is only refined, in small steps; an unmeasured one shrinks faster.
        probe_window = self._window_doubt and window > MIN_WINDOW_S
        self._history.append((now, self.learned, probe_window))
        if probe_window:
            self._shrink = PROBE_FIRST_STEP if self._window_measured else min(2 * self._step, 0.5)
            self.learned = Learned(self.learned.per_window, max(window * (1 - self._shrink), MIN_WINDOW_S))
            return
        raised = self.learned.per_window + max(1, math.ceil(self.learned.per_window * self._step))
        if raised >= self.configured.per_window and window >= self.configured.window_s:
            self.learned = None  # back to the configured limit
        else:
            self.learned = Learned(min(raised, self.configured.per_window), window)

    def refused(self, now: float, *, sent_at: float, new_episode: bool, estimate: Learned, measured: bool) -> None:
        """A 429 at ``now``: revert the probe that caused it, else take ``estimate`` (in an episode the latest wins).

        ``sent_at`` is when the refused request went out; ``new_episode`` is False for the other answers of a
        burst refused together; ``measured`` says whether a Retry-After gave the window length.
        """
        if new_episode:
            # The request may have gone out under any probe of the current chain: revert to what held before it.
            held = [(before, shortened) for probe_at, before, shortened in self._history if probe_at <= sent_at]
            self._history.clear()
            self._probe_at = None
            self._episode_probe = bool(held)
            if held:
                before, window_probed = held[-1]
                self.learned = before
                if window_probed:
                    # The window settles a small step above the last that held: that step is the jitter cushion.
                    self._window_doubt = False
                    self.learned = Learned(before.per_window, before.window_s * (1 + PROBE_FIRST_STEP))
        if not self._episode_probe:
            if measured:
                self._window_measured = True
                self._window_doubt = estimate.window_s != self.configured.window_s
            elif self.learned is None:
                self._window_measured, self._window_doubt = False, True  # first 429 and no Retry-After
            self.learned = estimate
        self._stable_since = now
        self._step = PROBE_FIRST_STEP


class SharedLimit:
    """One limit shared by every tenant of the process (Graph: 130,000 requests per 10 s per app)."""

    def __init__(
        self, *, per_window: int = 130_000, window_s: float = 10.0, margin_s: float = DEFAULT_MARGIN_S
    ) -> None:
        self.per_window = per_window
        self.span_s = window_s + margin_s
        self.log = SendLog(retention_s=self.span_s)

    def room_at(self, now: float, count: int) -> float:
        return self.log.room_at(now, limit=self.per_window, span_s=self.span_s, count=count)


class TenantLimits:
    """Every limit of one tenant for one app, the limit learned from 429s, the cool-down and the batch size.

    The pacer calls :meth:`room` (or :meth:`earliest_send_at`) before a request, :meth:`record_send` when it
    goes out, then :meth:`succeeded` and/or :meth:`throttled` with what the answer said.
    """

    def __init__(
        self,
        *,
        writes_per_window: int = 100,
        tenant_writes_per_window: int = 200,
        any_per_window: int = 1000,
        tenant_any_per_window: int = 2000,
        window_s: float = 20.0,
        margin_s: float = DEFAULT_MARGIN_S,
        batch_size: int = 20,
        shared: SharedLimit | None = None,
    ) -> None:
        self.window_s = window_s
        self.margin_s = margin_s
        # Only our own sends are visible, so a per-tenant limit binds only when set below the per-app one;
        # the share other apps take is learned from 429s.
        self.learner = Learner(Learned(min(writes_per_window, tenant_writes_per_window), window_s))
        self.any_limit = min(any_per_window, tenant_any_per_window)
        self.writes = SendLog(retention_s=window_s + margin_s)
        self.anything = SendLog(retention_s=window_s + margin_s)
        self.shared = shared
        self.cooldown_until = 0.0
        self.batch_limit = self.configured_batch = batch_size
        self._batch_stable_since = 0.0
        self._episode_base = self.learner.current
        self._episode_window: float | None = None
        self._last_write_at = -math.inf
        self._episode_at = -math.inf
        self._burst_start = -math.inf

    # -- sending --------------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int:
        """The largest batch to send next: the batch limit, and never more than the write window holds."""
        return max(
            1, min(self.batch_limit, self.learner.current.per_window, self.learner.probe_chunk or self.batch_limit)
        )

    def earliest_send_at(self, now: float, *, writes: int, reads: int = 0) -> float:
        """The earliest time >= ``now`` at which ``writes`` writes and ``reads`` reads may go out."""
        at = max(now, self.cooldown_until)
        if writes:
            limit = self.learner.current
            if self.learner.learned is not None:  # the configured limit still holds
                at = max(at, self._writes_room(now, self.learner.configured, writes))
            at = max(at, self._writes_room(now, limit, writes))
        span = self.window_s + self.margin_s
        at = max(at, self.anything.room_at(now, limit=self.any_limit, span_s=span, count=writes + reads))
        if self.shared is not None:
            at = max(at, self.shared.room_at(now, writes + reads))
        return at

    def _writes_room(self, now: float, limit: Learned, writes: int) -> float:
        return self.writes.room_at(now, limit=limit.per_window, span_s=limit.window_s + self.margin_s, count=writes)

    def room(self, now: float) -> int:
        """How many writes may go out at ``now`` (0 while cooling down): size a batch to fit rather than wait."""
        if now < self.cooldown_until:
            return 0
        low, high = 0, self.max_batch
        while low < high:  # at most five calls of earliest_send_at for a batch of 20
            mid = (low + high + 1) // 2
            if self.earliest_send_at(now, writes=mid) <= now:
                low = mid
            else:
                high = mid - 1
        return low

    def record_send(self, now: float, *, writes: int, reads: int = 0) -> None:
        """Count a request (or a ``$batch`` of ``writes + reads`` sub-requests) sent at ``now``."""
        if writes:
            if now - self._last_write_at > self.writes.retention_s:
                self._burst_start = now  # nothing of ours left in any window: a fresh start
            self._last_write_at = now
        self.writes.add(now, writes)
        self.anything.add(now, writes + reads)
        if self.shared is not None:
            self.shared.log.add(now, writes + reads)

    # -- answers -----------------------------------------------------------------------------------
    def succeeded(self, now: float) -> None:
        """Writes admitted at ``now``: after a stable period probe a higher limit, and recover the batch size."""
        stable_s = now - self._batch_stable_since
        if self.batch_limit < self.configured_batch and stable_s >= self.learner.current.window_s:
            self.batch_limit = min(self.configured_batch, self.batch_limit * 2)
            self._batch_stable_since = now
        self.learner.stable(now)

    def shrink_batch(self, now: float) -> None:
        """A whole ``$batch`` envelope was throttled or failed at ``now``: halve the batch size (down to 1)."""
        self.batch_limit = max(1, self.batch_limit // 2)
        self._batch_stable_since = now

    def throttled(
        self,
        now: float,
        *,
        sent_at: float,
        refused: int,
        retry_after_s: float | None,
        refused_reads: int = 0,
        envelope: bool = False,
    ) -> None:
        """A 429 for ``refused`` writes: learn the real limit, pause the tenant, shrink the batch on an envelope 429.

        ``sent_at`` is when the refused request went out: the answers to requests sent before this episode's
        first 429 belong to that episode. ``retry_after_s`` is the parsed ``Retry-After`` (whole, fractional or from an HTTP date), None when absent.
        The refused sends are forgotten: the service does not count them in its window. Only refused writes
        teach the write limit; refused reads just pause the tenant.
        """
        self.writes.forget(refused)
        self.anything.forget(refused + refused_reads)
        if self.shared is not None:
            self.shared.log.forget(refused + refused_reads)
        if envelope:
            # A whole $batch refused is not about the tenant's write window (the sub-requests would be refused one
            # by one): it says the request was too big or a wider limit was hit. Smaller batches, no learning.
            self.shrink_batch(now)
        elif refused:
            self._learn(now, sent_at, retry_after_s)
        learned = self.learner.current
        self.writes.retention_s = max(self.window_s, learned.window_s) + self.margin_s
        # Without Retry-After: the wait the learned window implies (until it has room for one more write).
        wait_until = self._writes_room(now, learned, 1) if retry_after_s is None else now + retry_after_s
        self.cooldown_until = max(self.cooldown_until, wait_until)

    def _learn(self, now: float, sent_at: float, retry_after_s: float | None) -> None:
        new_episode = sent_at >= self._episode_at
        if new_episode:
            self._episode_at = now
            # The later answers of a refused burst are read against what we believed before it, and share
            # the tightest window any of them measured (one of them may lack Retry-After).
            self._episode_base = self.learner.current
            self._episode_window = None
        estimate = self._estimate(now, retry_after_s, self._episode_base)
        self.learner.refused(
            now, sent_at=sent_at, new_episode=new_episode, estimate=estimate, measured=self._episode_window is not None
        )

    def _estimate(self, now: float, retry_after_s: float | None, base: Learned) -> Learned:
        """The write limit the service enforces, from its admitted count and its ``Retry-After``.

        ``base`` is what we believed when the episode began. The service reopens when the oldest request in
        its window leaves it, at ``now + Retry-After``; after a fresh start (nothing of ours left in any window)
        the oldest send we still hold is that request, so ``now + Retry-After - oldest`` bounds the window from above. The
        limit is what we sent in the window that the service admitted.
        """
        window = base.window_s
        if retry_after_s is not None:
            lookback = max(window, self.window_s) + self.margin_s
            oldest = self.writes.oldest_since(now, now - lookback)
            # Only after a fresh start can our oldest send be the request the service waits for; otherwise an
            # older request (ours, or another app's) may leave the window first and the length cannot be read.
            if oldest is not None and oldest == self._burst_start and retry_after_s >= now - oldest:
                # Whole seconds and dates are rounded up and latency adds to it: take the tightest bound, but
                # a Retry-After well beyond the window we believe means the window is longer.
                bound = max(now + retry_after_s - oldest, MIN_WINDOW_S)
                measured = bound if retry_after_s > window + ROUNDING_S else min(window, bound)
                self._episode_window = min(measured, self._episode_window or measured)
        window = self._episode_window or window
        admitted = self.writes.count_since(now, now - window - self.margin_s)
        if admitted == 0:
            # Refused with nothing of ours in the window we believe: older sends still count, it is longer.
            return Learned(base.per_window, 2 * window)
        # A learned limit at most halves per episode: a window a little too short also shows few sends in it.
        floor = base.per_window // 2 if base != self.learner.configured else 1
        return Learned(min(max(admitted, floor), self.learner.configured.per_window), window)
