"""Plain data passed between the job reader, the engine and the report. No I/O here."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from enum import StrEnum
from typing import Any

from msgspec import Struct, field

_last_ms: list[tuple[int, str]] = [(-1, "")]  # the millisecond last formatted, with its text (one tuple: atomic)


def utc_now() -> str:
    """The current UTC time as the report writes it (ISO 8601, milliseconds, ``Z``).

    Every result line carries one; the operations of a ``$batch`` finish within the same millisecond, so the text
    is formatted once per millisecond, not once per line.
    """
    now_ms = time.time_ns() // 1_000_000
    last_ms, text = _last_ms[0]
    if now_ms != last_ms:
        moment = dt.datetime.fromtimestamp(now_ms // 1000, dt.UTC).replace(microsecond=now_ms % 1000 * 1000)
        text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _last_ms[0] = (now_ms, text)
    return text


class Action(StrEnum):
    """The two actions every job has always had; any other bound action is named by its Graph name."""

    UPDATE = "update"  # a PATCH
    SYNC = "sync"  # the Exchange Connector's sync


class Status(StrEnum):
    """Final state of one operation in the report."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"  # a non-idempotent action may or may not have happened (see docs/report-format.md)


# plain text, for comparisons once per operation
_UPDATE, _SKIPPED, _SUCCEEDED = Action.UPDATE.value, Status.SKIPPED.value, Status.SUCCEEDED.value

UNCHANGED = "Unchanged"  # the reason of a skip: the object already had every patched value (nothing to do)
CONFLICT = "Conflict"  # the reason of a skip: an undo line's object was changed since bulkconn wrote it (left alone)


NO_TENANT = "(no configured tenant)"  # where invalid lines naming no configured tenant ('contosso', '*', none) count


def tenant_order(alias: str) -> tuple[bool, str]:
    """Sort key of tenant rows: by alias, with :data:`NO_TENANT` last."""
    return alias == NO_TENANT, alias


def reached(status: str, reason: str | None) -> bool:
    """Whether an operation ended in the state its line asked for: it succeeded, or was skipped as ``Unchanged``.

    Everything else (failed, invalid, uncertain, a ``Conflict`` left alone) is a problem to show and to count
    in the exit code.
    """
    return status == Status.SUCCEEDED or (status == Status.SKIPPED and reason == UNCHANGED)


# Not frozen: a frozen dataclass sets every field through object.__setattr__, which made building an Operation
# 4x slower (about 1 us, once per job line in the scan and again when a lane reads it). Nothing changes one.
# gc=False (here and on the other values built once per operation: Outcome, OpState, ResultLine, Request,
# SubResult): they hold text, numbers and JSON values, never a reference cycle, so the cyclic collector need not
# track them; a run then allocates no tracked object per operation and its collections stay short.
class Operation(Struct, gc=False):
    """One validated line of a job.

    ``action`` is ``update`` (a PATCH of ``patch``) or the name of a bound action called with ``params``
    (``sync``, ``updateDeviceProperties``, ``wipe``...); ``resource`` is the collection as the line names it.
    ``odata_type`` is the object's concrete type when the line says it (abstract collections). An action is
    sent again after a lost answer only when ``action_idempotent`` (the registry's allow-list).
    """

    key: str
    line: int
    tenant: str
    resource: str
    object_id: str
    action: str
    patch: dict[str, Any] = field(default_factory=dict)
    sync_type: str = ""  # the Exchange Connector sync's syncType (also in ``params``)
    expect: dict[str, Any] | None = None  # an undo line: the values bulkconn wrote (docs/selectors-plan-rollback.md)
    params: dict[str, Any] = field(default_factory=dict)
    odata_type: str = ""
    action_idempotent: bool = False

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice is harmless: a PATCH, or an allow-listed action."""
        return self.action == _UPDATE or self.action_idempotent  # asked once per send: no enum attribute lookup


class ErrorInfo(Struct, frozen=True):
    code: str
    message: str


class Outcome(Struct, gc=False):  # gc=False: see Operation
    """The final result of one operation: one report line."""

    key: str
    line: int
    tenant: str
    object_id: str
    action: str
    status: Status
    http_status: int | None = None
    attempts: int = 0
    throttled: int = 0
    error: ErrorInfo | None = None
    request_id: str = ""
    client_request_id: str = ""
    duration_ms: int = 0
    finished_at: str = ""
    reason: ErrorInfo | None = None  # why a ``skipped`` operation was not sent (``Unchanged``, ``Conflict``)

    @classmethod
    def invalid(cls, *, key: str, line: int, tenant: str, object_id: str, action: str, message: str) -> Outcome:
        """A job line that failed validation (never sent)."""
        return cls(
            key=key,
            line=line,
            tenant=tenant,
            object_id=object_id,
            action=action or Action.UPDATE.value,
            status=Status.INVALID,
            error=ErrorInfo("InvalidLine", message),
            finished_at=utc_now(),
        )

    @classmethod
    def uncertain_sync(
        cls, *, key: str, line: int, tenant: str, object_id: str, action: str = Action.SYNC.value
    ) -> Outcome:
        """A sync (or another action that is not idempotent) that was being sent when an earlier run stopped:
        it may have happened."""
        return cls(
            key=key,
            line=line,
            tenant=tenant,
            object_id=object_id,
            action=action,
            status=Status.UNCERTAIN,
            error=ErrorInfo(
                "UncertainSync" if action == Action.SYNC else "UncertainAction",
                f"the run stopped while this {action} was being sent; it may have "
                "happened, so it is not sent again (resume with --resend-uncertain to send it)",
            ),
            finished_at=utc_now(),
        )


class Progress(Struct):
    """Live counters of a run, fed by the engine and read by the progress display."""

    total: int = 0
    done: Counter[str] = field(default_factory=Counter)  # status -> count
    throttled: int = 0
    retries: int = 0
    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    throttled_by_tenant: Counter[str] = field(default_factory=Counter)
    limit_by_tenant: dict[str, tuple[int, float]] = field(default_factory=dict)  # writes per window, window s
    started: float = field(default_factory=time.monotonic)  # the run's clock (monotonic seconds) at its start
    skip_reasons: Counter[str] = field(default_factory=Counter)  # reason code (Unchanged, Conflict) -> skipped
    conflicts_by_tenant: Counter[str] = field(default_factory=Counter)  # skipped as Conflict, per tenant

    @property
    def finished(self) -> int:
        return sum(self.done.values())

    @property
    def conflicts(self) -> int:
        return self.skip_reasons[CONFLICT]

    def record(self, tenant: str, status: Status, *, reason: str = "") -> None:
        """One operation reached its final status (``reason``: the code of a skip)."""
        key = str(status)  # the plain text, as `.value` gives it for a third of the CPU (once per operation)
        self._count(tenant, key, 1)
        if key == _SKIPPED:
            self.skip_reasons[reason or UNCHANGED] += 1
            if reason == CONFLICT:
                self.conflicts_by_tenant[tenant] += 1

    def record_succeeded(self, tenant: str, count: int) -> None:
        """``count`` operations of ``tenant`` succeeded: what ``count`` calls of :meth:`record` count, in one
        (the engine's tally of a batch whose answers all succeeded)."""
        self._count(tenant, _SUCCEEDED, count)

    def _count(self, tenant: str, key: str, count: int) -> None:
        self.done[key] += count
        counts = self.per_tenant.get(tenant)
        if counts is None:  # not setdefault: that builds a Counter for every operation
            counts = self.per_tenant[tenant] = Counter()
        counts[key] += count

    def record_throttled(self, tenant: str) -> None:
        self.throttled += 1
        self.throttled_by_tenant[tenant] += 1
