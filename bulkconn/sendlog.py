"""Exact sliding-window counts of our own sends: one tenant's logs and the process-wide shared limit.

No clock and no I/O: every method takes ``now`` (loop time, seconds). See ``docs/pacing.md``.

* :class:`SendLog` counts our own sends in a trailing window exactly (a deque of ``[time, count]``
  entries and a running sum). A send is allowed when the count over the last ``window_s + margin_s``
  plus the new requests stays within the limit. The margin is *time* (the spread of network latency
  between our clock and the service's), not a share of the limit, so a window is filled to the limit.
* :class:`SharedLimit` is Graph's per-app limit across all tenants: one log that every tenant's
  :class:`~bulkconn.limits.TenantLimits` of the same app adds to.
"""

from __future__ import annotations

from collections import deque

DEFAULT_MARGIN_S = 0.25  # latency spread between our send time and the service's arrival time


class SendLog:
    """Our own sends in the trailing ``retention_s`` seconds: O(1) amortised per send.

    Entries are ``[time, count]`` in send order; the running sum is kept so that a full-window count is
    O(1). Counting a shorter span walks back from the newest entry (a few entries: one per batch).

    ``total`` is the running sum: the sends held, including any older than ``retention_s`` not pruned yet, so
    it is never below the count of any span. ``total + count <= limit`` therefore proves room for ``count``
    more in every span without looking closer (what :meth:`room_at` checks first, and the pacer's fast path).
    """

    __slots__ = ("_entries", "retention_s", "total")

    def __init__(self, *, retention_s: float) -> None:
        self.retention_s = retention_s
        self._entries: deque[list[float]] = deque()
        self.total = 0

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention_s
        while self._entries and self._entries[0][0] <= cutoff:
            self.total -= int(self._entries.popleft()[1])

    def add(self, now: float, count: int) -> None:
        """Record ``count`` requests sent at ``now``."""
        entries = self._entries
        cutoff = now - self.retention_s
        while entries and entries[0][0] <= cutoff:  # _prune, inlined: three logs take every send
            self.total -= int(entries.popleft()[1])
        if count > 0:
            entries.append([now, float(count)])
            self.total += count

    def forget(self, count: int, *, sent_at: float | None = None) -> None:
        """Remove ``count`` sends (the service refused them, so they do not occupy its window).

        With ``sent_at``, from the entries sent at that time (the refused request's own, even when later sends
        of other workers or tenants follow it); without, from the newest.
        """
        for index in range(len(self._entries) - 1, -1, -1):
            if count <= 0:
                break
            entry = self._entries[index]
            if sent_at is not None and entry[0] != sent_at:
                if entry[0] < sent_at:
                    break  # older than the request: it was never logged, or has left the log
                continue
            taken = min(count, int(entry[1]))
            entry[1] -= taken
            self.total -= taken
            count -= taken
            if entry[1] <= 0:
                del self._entries[index]

    def __len__(self) -> int:
        """Entries held (one per send), for memory checks."""
        return len(self._entries)

    def count_since(self, now: float, start: float) -> int:
        """Sends strictly after ``start`` (``start`` at or before the retention horizon: all of them)."""
        self._prune(now)
        return self._count_pruned(now, start)

    def _count_pruned(self, now: float, start: float) -> int:
        if start <= now - self.retention_s:
            return self.total
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
        if self.total + count <= limit:
            return now  # the whole log has room, so every span of it does: no need to look closer
        self._prune(now)
        excess = self._count_pruned(now, now - span_s) + count - limit
        if excess <= 0:
            return now
        for when, sent in self._entries:  # oldest first: wait until enough of them leave the span
            if when <= now - span_s:
                continue
            excess -= int(sent)
            if excess <= 0:
                return when + span_s
        return now  # unreachable: the entries in the span hold the whole excess


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
