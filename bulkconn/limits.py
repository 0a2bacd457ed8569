"""One tenant's pacing state: every limit at once, the cool-down, the batch size and the window search.

No clock and no I/O: every method takes ``now`` (loop time, seconds) so that the pacer can run it on the
event loop and tests can run it in a discrete-event simulation. See ``docs/pacing.md``.

* :class:`TenantLimits` applies every documented limit of one tenant at once (writes per app, writes
  per tenant, any request per app, any request per tenant; each ``$batch`` sub-request counts once),
  plus the process-wide :class:`~bulkconn.sendlog.SharedLimit` (Graph's per-app limit across all tenants),
  each counted exactly by a :class:`~bulkconn.sendlog.SendLog`.
* On a 429 it learns the real write limit from what the service admitted in the trailing window and
  from ``Retry-After`` (:mod:`bulkconn.episode`), keeps a shared cool-down until the latest
  ``Retry-After`` (or, when absent, until the learned window has room), and probes upwards after a
  stable period (:mod:`bulkconn.learning`) so a raised limit is followed within a few windows. Without
  any ``Retry-After`` after a fresh start, single writes at growing intervals find the window's length.
  An envelope-level 429 halves the batch size; stable windows double it back.
"""

from __future__ import annotations

import math

from msgspec import Struct

from bulkconn.episode import SATURATED, EpisodeReading
from bulkconn.learning import MIN_WINDOW_S, Learned, Learner
from bulkconn.sendlog import DEFAULT_MARGIN_S, SendLog, SharedLimit

SEARCH_FIRST = 1 / 32  # without Retry-After, the first probe tests a window this share of the configured one
SEARCH_RATIO = 2.0  # ... and each next probe a window this much longer
SEARCH_LONGEST = 4.0  # ... up to this many times the configured window


class _Search(Struct):
    """Finding the window without Retry-After: single writes at growing spans after the refused burst began.

    The service admitted the burst's first writes at about ``origin``, so a write sent at ``origin + span`` is
    admitted only if the window is at most ``span`` (give or take the latency): the first one admitted bounds
    the window from above, the last one refused from below.
    """

    origin: float  # when the refused burst began (after a fresh start)
    started: float  # when the search began: writes sent from then on are its probes
    span: float  # the window the next probe tests
    low: float = 0.0  # the longest span a probe showed too short


class TenantLimits(EpisodeReading):
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
        self.learner = Learner(Learned(min(writes_per_window, tenant_writes_per_window), window_s), reorder_s=margin_s)
        self.any_limit = min(any_per_window, tenant_any_per_window)
        self.writes = SendLog(retention_s=window_s + margin_s)
        self.anything = SendLog(retention_s=window_s + margin_s)
        self.shared = shared
        self.cooldown_until = 0.0
        self.batch_limit = self.configured_batch = batch_size
        self._batch_stable_since = 0.0
        self._episode_base = self.learner.current
        self._episode_window: float | None = None
        self._episode_floor = MIN_WINDOW_S  # the shortest the window may be, from an HTTP-date Retry-After
        self._last_write_at = -math.inf
        self._episode_at = -math.inf
        self._burst_start = -math.inf
        self._search: _Search | None = None
        self._starting = False  # after a fresh start, one write request in flight until the window is filled
        self._start_inflight = 0
        self._probe_grants = 0  # answers admitted while a higher limit is probed
        # The tenant's own part of earliest_send_at for the last (writes, reads) asked, while nothing changed: the
        # engine asks several times per request (max_batch, ready, wait, take). See _own_earliest.
        self._changes = 0  # counts every change of state that can move that answer
        self._cached: tuple[int, int, int, float, bool] = (-1, 0, 0, 0.0, False)  # changes, writes, reads, at, ready

    # -- sending --------------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int:
        """The largest batch to send next: the batch limit, and never more than the write window holds."""
        if self._search is not None:
            return 1  # the window is being found one write at a time
        return max(
            1, min(self.batch_limit, self.learner.current.per_window, self.learner.probe_chunk or self.batch_limit)
        )

    def earliest_send_at(self, now: float, *, writes: int, reads: int = 0) -> float:
        """The earliest time >= ``now`` at which ``writes`` writes and ``reads`` reads may go out."""
        if self._clear(now, writes, writes + reads):
            return now
        at = self._own_earliest(now, writes=writes, reads=reads)
        if self.shared is not None:  # other tenants change it at any time: never cached
            at = max(at, self.shared.room_at(now, writes + reads))
        return at

    def _clear(self, now: float, writes: int, requests: int) -> bool:
        """True when nothing holds the request back: :meth:`earliest_send_at` is ``now``, shown without asking.

        The common case (asked two or three times per request): no cool-down, no start-up, no search, no
        probe, the configured limit in force (``learned`` None: nothing learned, so nothing probed either), and
        every log holding so few sends that the request fits in all of it (a log's ``total`` is never below the
        count of any of its spans). Anything else takes the full computation, which gives ``now`` whenever this
        does (tests/test_pacing_fast.py checks it over simulated runs).
        """
        shared = self.shared
        return (
            now >= self.cooldown_until
            and self.learner.learned is None
            and self._search is None
            and not (self._starting and self._start_inflight)
            and self.writes.total + writes <= self.learner.configured.per_window
            and self.anything.total + requests <= self.any_limit
            and (shared is None or shared.log.total + requests <= shared.per_window)
        )

    def _own_earliest(self, now: float, *, writes: int, reads: int) -> float:
        """:meth:`_own_limits_at`, remembered for the last question until the state changes.

        Without a change of state the answer only gets better with time: a send leaves a window at a fixed time,
        a cool-down ends at a fixed time. So a time still ahead stays the answer until it is reached, and "now"
        stays "now". (A probe's "one window from now" is the one exception: the remembered time then comes
        earlier than a fresh answer would, and the caller, woken early, asks again.)
        """
        changes, cached_writes, cached_reads, cached_at, ready = self._cached
        if changes == self._changes and cached_writes == writes and cached_reads == reads:
            if ready:
                return now
            if cached_at > now:
                return cached_at
        at = self._own_limits_at(now, writes=writes, reads=reads)
        self._cached = (self._changes, writes, reads, at, at <= now)
        return at

    def _own_limits_at(self, now: float, *, writes: int, reads: int) -> float:
        """The earliest time >= ``now`` that the tenant's own limits (all but the shared one) allow."""
        at = max(now, self.cooldown_until)
        if writes:
            if self._starting and self._start_inflight:
                at = max(at, self._start_over_at(now))
            at = max(at, self._probe_room(now, writes))
            if self.learner.learned is not None:  # the configured limit still holds
                at = max(at, self._writes_room(now, self.learner.configured, writes))
            at = max(at, self._search_room(now, writes) if self._search else self._writes_room(now, writes=writes))
        span = self.window_s + self.margin_s
        return max(at, self.anything.room_at(now, limit=self.any_limit, span_s=span, count=writes + reads))

    def _start_over_at(self, now: float) -> float:
        """While starting, the next write request waits for the answer to the one in flight (or the window's end).

        A limit lower than configured then costs one batch refused at start, not all that the workers had sent
        before the first answer came back; a full window takes a few round trips longer to fill.
        """
        end = self._burst_start + self.window_s + self.margin_s
        if now >= end:
            self._starting = False
            self._changes += 1
            return now
        return end

    def _probe_room(self, now: float, writes: int) -> float:
        """While a higher limit is probed, one request at a time beyond what held, and a growing allowance: a
        refusal then costs one chunk, and the probe's first writes go when the old probe's would have."""
        held = self.learner.held
        chunk = None if held is None else self.learner.probe_chunk
        if held is None or chunk is None:
            return now
        span = held.window_s + self.margin_s
        if self.writes.count_since(now, now - span) + writes <= held.per_window:
            return now
        if self._start_inflight:
            return now + held.window_s  # or sooner: an answer wakes the waiters
        # Beyond what held, a chunk more for each answer admitted since the probe began.
        return self.writes.room_at(
            now, limit=held.per_window + chunk * (1 + self._probe_grants), span_s=span, count=writes
        )

    def _writes_room(self, now: float, limit: Learned | None = None, writes: int = 1) -> float:
        limit = limit or self.learner.current
        return self.writes.room_at(now, limit=limit.per_window, span_s=limit.window_s + self.margin_s, count=writes)

    def _search_room(self, now: float, writes: int) -> float:
        """While the window is being found: one write at the next probe time; a batch once the search is over."""
        search = self._search
        assert search is not None
        end = search.origin + SEARCH_LONGEST * self.window_s + self.margin_s
        if now >= end:  # no probe was admitted: leave it to what the 429s teach
            self._search = None
            self._changes += 1
            return self._writes_room(now, writes=writes)
        return min(search.origin + search.span + self.margin_s, end) if writes == 1 else end

    def room(self, now: float) -> int:
        """How many writes may go out at ``now`` (0 while cooling down): size a batch to fit rather than wait."""
        if now < self.cooldown_until:
            return 0
        high = self.max_batch
        if self.earliest_send_at(now, writes=high) <= now:
            return high  # the common case: the whole batch fits
        low, high = 0, high - 1
        while low < high:  # at most five calls of earliest_send_at for a batch of 20
            mid = (low + high + 1) // 2
            if self.earliest_send_at(now, writes=mid) <= now:
                low = mid
            else:
                high = mid - 1
        return low

    def record_send(self, now: float, *, writes: int, reads: int = 0) -> None:
        """Count a request (or a ``$batch`` of ``writes + reads`` sub-requests) sent at ``now``."""
        self._changes += 1
        if writes:
            if now - self._last_write_at > self.writes.retention_s:
                self._burst_start = now  # nothing of ours left in any window: a fresh start
                self._starting, self._start_inflight = True, 0
            self._last_write_at = now
            self._start_inflight += 1
            if self._search is not None:
                self._search.span *= SEARCH_RATIO  # this probe tests the current span; the next a longer one
        self.writes.add(now, writes)
        if self._starting and self.writes.count_since(now, self._burst_start - 1) >= self.learner.current.per_window:
            self._starting = False  # the window is full: the start is over
        self.anything.add(now, writes + reads)
        if self.shared is not None:
            self.shared.log.add(now, writes + reads)

    # -- answers -----------------------------------------------------------------------------------
    def answered(self) -> None:
        """Any answer to a write request (or none at all, after a timeout): call it before the others."""
        self._changes += 1
        self._start_inflight = max(self._start_inflight - 1, 0)

    def succeeded(self, now: float, *, sent_at: float | None = None) -> None:
        """Writes sent at ``sent_at`` admitted at ``now``: probe a higher limit after a stable period, recover
        the batch size; a probe of the window search admitted bounds the window."""
        self._changes += 1
        search = self._search
        if search is not None and sent_at is not None and sent_at >= search.started:
            self._search = None
            self.learner.bounds(now, low_s=search.low, high_s=sent_at - search.origin)
            self._retain()
            return
        stable_s = now - self._batch_stable_since
        current = self.learner.current
        if self.batch_limit < self.configured_batch and stable_s >= current.window_s:
            self.batch_limit = min(self.configured_batch, self.batch_limit * 2)
            self._batch_stable_since = now
        # Only a window that we filled shows the limit holds: one held back by another limit (the global one,
        # a cool-down) or by a lack of work proves nothing, and probing on it would creep up unchecked.
        probing = self.learner.held is not None
        self._probe_grants += probing
        # Nothing learned, nothing to probe (stable() returns at once): the count is not needed.
        saturated = SATURATED * current.per_window
        if (
            self.learner.learned is not None
            and self.writes.count_since(now, now - current.window_s - self.margin_s) >= saturated
        ):
            self.learner.stable(now)
        if not probing:
            self._probe_grants = 0

    def shrink_batch(self, now: float) -> None:
        """A whole ``$batch`` envelope was throttled or failed at ``now``: halve the batch size (down to 1)."""
        self._changes += 1
        self.batch_limit = max(1, self.batch_limit // 2)
        self._batch_stable_since = now

    def throttled(
        self,
        now: float,
        *,
        sent_at: float,
        refused: int,
        retry_after_s: float | None,
        tightest_retry_after_s: float | None = None,
        tightest_is_date: bool = False,
        refused_reads: int = 0,
        envelope: bool = False,
    ) -> None:
        """A 429 for ``refused`` writes: learn the real limit, pause the tenant, shrink the batch on an envelope 429.

        ``sent_at`` is when the refused request went out: the answers to requests sent before this episode's
        first 429 belong to that episode. ``retry_after_s`` is the parsed ``Retry-After`` (whole, fractional or
        from an HTTP date; the longest when sub-responses differ), None when absent; the tenant pauses until
        then. ``tightest_retry_after_s`` (the shortest) bounds the window best; ``tightest_is_date``: it was
        an HTTP date (whole seconds: the window may be up to one second shorter). The refused sends are
        forgotten: the service does not count them in its window. Only refused writes teach the write limit;
        refused reads just pause the tenant.
        """
        self._changes += 1
        self._starting = False  # the learned values pace from here
        self._probe_grants = 0
        self.writes.forget(refused, sent_at=sent_at)
        self.anything.forget(refused + refused_reads, sent_at=sent_at)
        if self.shared is not None:
            self.shared.log.forget(refused + refused_reads, sent_at=sent_at)
        if envelope:
            # A whole $batch refused is not about the tenant's write window (the sub-requests would be refused one
            # by one): it says the request was too big or a wider limit was hit. Smaller batches, no learning.
            self.shrink_batch(now)
        elif refused and not self._search_refused(sent_at):
            tightest = tightest_retry_after_s if tightest_retry_after_s is not None else retry_after_s
            self._learn(now, sent_at, refused, tightest, dated=tightest_is_date)
            self._start_search(now, sent_at, retry_after_s)
        self._retain()
        if retry_after_s is not None:
            wait_until = now + retry_after_s
        elif self._search is not None:
            wait_until = now  # the search's schedule paces its probes
        else:
            wait_until = self._writes_room(now)  # the wait the learned window implies (room for one more write)
        self.cooldown_until = max(self.cooldown_until, wait_until)
        if self.learner.episode_probe:
            # What the failed probe cost: the pause beyond the wait the learned window imposes anyway.
            self.learner.note_pause(self.cooldown_until - self._writes_room(now))

    def _retain(self) -> None:
        """Keep our sends as long as the longest window we pace to."""
        self.writes.retention_s = max(self.window_s, self.learner.current.window_s) + self.margin_s

    def _search_refused(self, sent_at: float) -> bool:
        """A probe of the window search was refused: the window is longer than its span. True if it was one."""
        search = self._search
        if search is None or sent_at < search.started:
            return False
        search.low = max(search.low, sent_at - search.origin)
        return True

    def _start_search(self, now: float, sent_at: float, retry_after_s: float | None) -> None:
        """After the first 429 of a fresh start without any Retry-After, find the window by probing."""
        if self._episode_window is not None:
            self._search = None  # another answer of the burst measured it
            return
        first = self._episode_base == self.learner.configured and not self.learner.episode_probe
        oldest = self.writes.oldest_since(now, now - self.window_s - self.margin_s)
        if self._search is not None or retry_after_s is not None or not first or oldest is None:
            return
        if oldest > self._burst_start + self.margin_s or sent_at - self._burst_start >= self.window_s:
            return  # not the first window after a fresh start: older requests (or other apps') may hold it
        low = max(sent_at - oldest, 0.0)
        span = max(self.window_s * SEARCH_FIRST, low * SEARCH_RATIO)
        if span < SEARCH_LONGEST * self.window_s:
            self._search = _Search(origin=oldest, started=now, span=span, low=low)
