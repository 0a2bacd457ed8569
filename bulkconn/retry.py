"""Pure retry decisions: classify an answer, parse Retry-After, compute backoff. No I/O, no clock.

A decision is a value (:class:`Retry`, :class:`Done`), not an exception.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from bulkconn.model import ErrorInfo

TRANSIENT = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Budgets and backoff; documented defaults, each one a ``bulkconn run`` flag."""

    max_attempts: int = 10
    max_attempts_500: int = 3  # a 500 is less likely to be transient than a 503/504
    time_budget_s: float = 900.0  # per operation, from its first attempt
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    retry_after_cap_s: float = 300.0  # a longer Retry-After is honoured up to this, then the op is re-queued again
    retry_uncertain_sync: bool = False  # resend a sync whose first attempt may have reached the service


@dataclass(frozen=True, slots=True)
class Retry:
    after_s: float
    throttled: bool
    error: ErrorInfo
    new_connection: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    succeeded: bool
    error: ErrorInfo | None = None
    uncertain: bool = False  # a non-idempotent action that may have been applied


Decision = Retry | Done


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: whole or fractional seconds, or an HTTP date.

    ``None`` when absent or unparseable (the caller then backs off exponentially).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - (now or dt.datetime.now(dt.UTC))).total_seconds(), 0.0)


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(attempt-1)))."""
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * (2 ** max(attempt - 1, 0)))
    return rng.uniform(0, ceiling)


def classify(
    *,
    status: int | None,
    retry_after: str | None,
    error: ErrorInfo | None,
    attempt: int,
    elapsed_s: float,
    idempotent: bool,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """Decide what to do after attempt number ``attempt`` (1-based) ended with ``status``.

    ``status`` None means no HTTP answer at all (connection error or timeout).
    """
    if status is not None and 200 <= status < 300:
        return Done(True)
    err = error or ErrorInfo(str(status), f"HTTP {status}")
    retryable = status is None or status == 429 or status in TRANSIENT
    if not retryable:
        return Done(False, err)
    # A 429 was refused before anything happened, so even a sync may be resent. Anything else may have
    # reached the service: a non-idempotent action is not resent unless the user allows it.
    if status != 429 and not idempotent and not policy.retry_uncertain_sync:
        return Done(False, err, uncertain=True)
    budget = policy.max_attempts_500 if status == 500 else policy.max_attempts
    if attempt >= budget:
        return Done(False, ErrorInfo(err.code, f"gave up after {attempt} attempts: {err.message}"))
    parsed = parse_retry_after(retry_after)
    wait = min(parsed, policy.retry_after_cap_s) if parsed is not None else backoff_s(attempt, policy, rng)
    if elapsed_s + wait > policy.time_budget_s:
        return Done(
            False,
            ErrorInfo(
                err.code,
                f"gave up: the time budget of {policy.time_budget_s:g} s is spent "
                f"after {attempt} attempts: {err.message}",
            ),
        )
    return Retry(after_s=wait, throttled=status == 429, error=err, new_connection=status == 503)
