"""What happens to an answer: one pure, total decision per operation (:func:`decide`). No I/O, no clock.

A decision is a value, not an exception: :class:`Retry` (when, over a fresh connection or not, after
re-authenticating or not) or :class:`Done` (succeeded, failed or uncertain; perhaps quarantining the
tenant). The engine only carries decisions out. What the tenant's pacer learns from the same answers (429s,
``Retry-After``, a failed ``$batch`` envelope) is :func:`bulkconn.pacing.heard`.

The rules, in order (``docs/engine.md`` gives the reasons and sources):

==================================  ======================================================================
answer                              decision
==================================  ======================================================================
2xx                                 done, succeeded
401, first time for this operation  retry at once with a fresh token
403                                 done, failed; the tenant is quarantined (a missing permission)
TLS certificate not trusted         done, failed; the tenant is quarantined (its CA or a proxy is wrong)
other 4xx (and a second 401)        done, failed
429                                 retry after Retry-After, even a sync: nothing happened; without
                                    Retry-After at once, and the tenant's pacer holds it back as long
                                    as the limit it learned implies
5xx or no answer, update            retry after Retry-After (or backoff); a 503 over a new connection
5xx or no answer, sync              done, uncertain (unless ``retry_uncertain_sync``)
no connection at all, sync          retry: the request never left, so nothing happened
attempts or time budget spent       done, failed, saying which budget ran out
whole envelope 429 or 5xx           as above for each operation (the pacer shrinks the batch size)
==================================  ======================================================================
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from msgspec import Struct, field

from bulkconn.model import ErrorInfo, Status

TRANSIENT = frozenset({500, 502, 503, 504})


class RetryPolicy(Struct, frozen=True, kw_only=True):
    """Budgets and backoff; documented defaults, each one a ``bulkconn run`` flag."""

    max_attempts: int = 10
    max_attempts_500: int = 3  # 500 answers per operation: a 500 is less likely to be transient than a 503/504
    time_budget_s: float = 900.0  # per operation, from its first attempt
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    retry_after_cap_s: float = 300.0  # a longer Retry-After is honoured up to this, then the op is re-queued again
    retry_uncertain_sync: bool = False  # resend a sync whose first attempt may have reached the service


# Not frozen (nor the classes below): one of each is built per operation and answer, and a frozen dataclass's
# __init__ costs 4x a plain one's. Nothing changes them after construction.
class Retry(Struct):
    """Send the operation again ``after_s`` seconds from now."""

    after_s: float
    throttled: bool
    error: ErrorInfo
    new_connection: bool = False  # over a connection never used before (after a 503)
    reauthenticate: bool = False  # drop the refused token and get a fresh one first


class Done(Struct):
    """The operation has its final outcome."""

    succeeded: bool
    error: ErrorInfo | None = None
    uncertain: bool = False  # a non-idempotent action that may have been applied
    quarantine: ErrorInfo | None = None  # the tenant's remaining operations fail with this reason

    @property
    def status(self) -> Status:
        if self.succeeded:
            return Status.SUCCEEDED
        return Status.UNCERTAIN if self.uncertain else Status.FAILED


Decision = Retry | Done


class Answer(Struct, kw_only=True):
    """What one attempt of one operation got back (from a single request or a ``$batch`` sub-response)."""

    status: int | None  # None: no usable HTTP answer (connection error, timeout, unreadable envelope)
    headers: Mapping[str, str] = field(default_factory=dict)  # looked up by lower-case name
    error: ErrorInfo | None = None
    whole_envelope: bool = False  # the ``$batch`` envelope itself answered this, for every operation in it
    sent: bool = True  # False: the request certainly never reached the service (no connection, TLS refused)

    @property
    def envelope_failed(self) -> bool:
        """The whole ``$batch`` envelope was throttled (429) or failed (5xx): smaller batches should follow."""
        return self.whole_envelope and self.status is not None and (self.status == 429 or self.status >= 500)


class Attempt(Struct, kw_only=True):
    """The operation's history so far, as the decision needs it."""

    number: int  # 1-based: the attempt that produced the answer
    elapsed_s: float  # since the first attempt
    idempotent: bool
    reauthenticated: bool = False  # a 401 was already retried with a fresh token
    answers_500: int = 0  # how many of the answers so far (this one included) were a 500


def succeeded(status: int | None) -> bool:
    """Whether :func:`decide` ends any operation answered ``status`` as succeeded, whatever its history (a 2xx).

    The engine settles those without building the history (:class:`Attempt`): nearly every answer is one.
    """
    return status is not None and 200 <= status < 300


def decide(answer: Answer, attempt: Attempt, *, tenant: str, policy: RetryPolicy, rng: random.Random) -> Decision:
    """The one decision for ``answer`` to ``attempt`` of an operation of ``tenant`` (rules in the module doc)."""
    if answer.status == 401 and not attempt.reauthenticated:
        # The token was refused (expired or revoked early): drop it, get a fresh one, retry once at once.
        error = answer.error or ErrorInfo("401", "HTTP 401")
        return Retry(after_s=0.0, throttled=False, error=error, reauthenticate=True)
    if answer.status == 403:
        error = answer.error or ErrorInfo("Forbidden", "HTTP 403")
        reason = ErrorInfo(error.code, f"permission missing for tenant '{tenant}': {error.message}")
        return Done(False, error, quarantine=reason)
    if answer.status is None and answer.error is not None and answer.error.code == "TLSError":
        # Not transient: the same certificate is refused every time. Never retried without verification.
        reason = ErrorInfo("TLSError", f"TLS failed for tenant '{tenant}': {answer.error.message}")
        return Done(False, answer.error, quarantine=reason)
    return classify(
        status=answer.status,
        retry_after=answer.headers.get("retry-after"),
        error=answer.error,
        attempt=attempt.number,
        answers_500=attempt.answers_500,
        elapsed_s=attempt.elapsed_s,
        idempotent=attempt.idempotent or not answer.sent,  # a request that never left may be sent again
        policy=policy,
        rng=rng,
    )


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: whole or fractional seconds, or an HTTP date.

    ``None`` when absent or unparseable. An HTTP date is read against ``now`` (default: :func:`wall_now`).
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
    return max((when - (now or wall_now())).total_seconds(), 0.0)


def wall_now() -> dt.datetime:
    """The wall clock an HTTP-date ``Retry-After`` is read against (tests replace it with virtual time)."""
    return dt.datetime.now(dt.UTC)


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
    answers_500: int | None = None,
) -> Decision:
    """The status-based part of :func:`decide`: after attempt number ``attempt`` (1-based) ended with ``status``.

    ``status`` None means no HTTP answer at all (connection error or timeout). ``answers_500`` counts the 500s
    among the answers so far, this one included (None: take every attempt as one, for callers that do not count).
    """
    if succeeded(status):
        return Done(True)
    err = error or ErrorInfo(str(status), f"HTTP {status}")
    retryable = status is None or status == 429 or status in TRANSIENT
    if not retryable:
        return Done(False, err)
    # A 429 was refused before anything happened, so even a sync may be resent. Anything else may have
    # reached the service: a non-idempotent action is not resent unless the user allows it.
    if status != 429 and not idempotent and not policy.retry_uncertain_sync:
        return Done(False, err, uncertain=True)
    spent_500 = attempt if answers_500 is None else answers_500
    if attempt >= policy.max_attempts or (status == 500 and spent_500 >= policy.max_attempts_500):
        return Done(False, ErrorInfo(err.code, f"gave up after {attempt} attempts: {err.message}"))
    parsed = parse_retry_after(retry_after)
    if parsed is not None:
        wait = min(parsed, policy.retry_after_cap_s)
    else:
        # A 429 without Retry-After is resent as soon as the tenant's pacer lets it go: the pacer waits what the
        # limit it learned implies (docs/pacing.md), which a blind backoff would only add to.
        wait = 0.0 if status == 429 else backoff_s(attempt, policy, rng)
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
