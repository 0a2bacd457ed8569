"""Reading a 429 episode: the write limit and the window the service enforces, from what it admitted.

Part of :class:`~bulkconn.limits.TenantLimits` (a mixin over its state), kept apart because it is one question:
what does this refusal, with or without ``Retry-After``, say about the service's limit? The answers of one
refused burst form an episode: they are read against what we believed before it and share the tightest window
any of them measured. The result goes to :class:`~bulkconn.learning.Learner`. Pure: every method takes ``now``.
See ``docs/pacing.md``.
"""

from __future__ import annotations

from bulkconn.learning import MIN_WINDOW_S, RESOLUTION_S, Learned, Learner
from bulkconn.sendlog import SendLog

ROUNDING_S = 2.0  # an HTTP-date Retry-After can be up to this much late (whole seconds, rounded up)
SATURATED = 0.9  # a learned window counts as holding only when we sent at least this share of its limit in it


class EpisodeReading:
    """What a 429 says about the limit: :class:`~bulkconn.limits.TenantLimits` sets every attribute below."""

    learner: Learner
    writes: SendLog
    window_s: float
    margin_s: float
    _burst_start: float  # when our latest fresh start (nothing of ours left in any window) began
    _episode_at: float  # when the current episode's first 429 came
    _episode_base: Learned  # what we believed when the episode began
    _episode_window: float | None  # the tightest window any answer of the episode measured
    _episode_floor: float  # the shortest the window may be, from an HTTP-date Retry-After

    def _learn(self, now: float, sent_at: float, refused: int, retry_after_s: float | None, *, dated: bool) -> None:
        new_episode = sent_at >= self._episode_at
        if new_episode:
            self._episode_at = now
            # The later answers of a refused burst are read against what we believed before it, and share
            # the tightest window any of them measured (one of them may lack Retry-After).
            self._episode_base = self.learner.current
            self._episode_window = None
            self._episode_floor = MIN_WINDOW_S
        estimate = self._estimate(now, sent_at, refused, retry_after_s, self._episode_base)
        if dated and self._episode_window is not None:
            self._episode_floor = max(self._episode_floor, self._episode_window - RESOLUTION_S)
        self.learner.refused(
            now,
            sent_at=sent_at,
            new_episode=new_episode,
            estimate=estimate,
            measured=self._episode_window is not None,
            window_floor_s=self._episode_floor,
            informed=retry_after_s is not None,
            saturated=self._saturated(now, sent_at, refused, self._episode_base),
            admitted=self.writes.count_since(now, sent_at - self._episode_base.window_s),
        )

    def _saturated(self, now: float, sent_at: float, refused: int, base: Learned) -> bool:
        """Whether the refused request filled our own log of the window we believed to (nearly) its limit."""
        start = sent_at - base.window_s - self.margin_s
        ours = self.writes.count_since(now, start) - self.writes.count_since(now, sent_at) + refused
        return ours >= SATURATED * base.per_window

    def _estimate(
        self, now: float, sent_at: float, refused: int, retry_after_s: float | None, base: Learned
    ) -> Learned:
        """The write limit the service enforces, from its admitted count and its ``Retry-After``.

        ``base`` is what we believed when the episode began. The service reopens when the oldest request in
        its window leaves it, at ``now + Retry-After``; after a fresh start (nothing of ours left in any window)
        the oldest send we still hold is that request, so ``now + Retry-After - oldest`` bounds the window from
        above. The limit is what we sent in the window that the service admitted.
        """
        window = base.window_s
        if retry_after_s is not None:
            self._measure(now, retry_after_s, window)
        window = self._episode_window or window
        admitted = self.writes.count_since(now, now - window - self.margin_s)
        if admitted == 0:
            # Refused with nothing of ours in the window we believe: older sends still count, it is longer.
            return Learned(base.per_window, 2 * window)
        # A learned limit at most halves per episode: a window a little too short also shows few sends in it.
        floor = base.per_window // 2 if base != self.learner.configured else 1
        return Learned(min(max(admitted, floor), self.learner.configured.per_window), window)

    def _measure(self, now: float, retry_after_s: float, window: float) -> None:
        """Bound the window with ``Retry-After`` after a fresh start (see :meth:`_estimate`)."""
        lookback = max(window, self.window_s) + self.margin_s
        oldest = self.writes.oldest_since(now, now - lookback)
        # Only after a fresh start can our oldest send be the request the service waits for; otherwise an
        # older request (ours, or another app's) may leave the window first and the length cannot be read.
        # The first send of the burst may itself have been refused (latency reorders arrivals): any send of
        # the burst's first moments (within the margin) will do.
        if oldest is None or not self._burst_start <= oldest <= self._burst_start + self.margin_s:
            return
        if retry_after_s < now - oldest:
            return
        # Whole seconds and dates are rounded up and latency adds to it: take the tightest bound, but
        # a Retry-After well beyond the window we believe means the window is longer.
        bound = max(now + retry_after_s - oldest, MIN_WINDOW_S)
        measured = bound if retry_after_s > window + ROUNDING_S else min(window, bound)
        self._episode_window = min(measured, self._episode_window or measured)
