"""Plain data passed between the job reader, the engine and the report. No I/O here."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


def utc_now() -> str:
    """The current UTC time as the report writes it (ISO 8601, milliseconds, ``Z``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Action(StrEnum):
    UPDATE = "update"
    SYNC = "sync"


class Status(StrEnum):
    """Final state of one operation in the report."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"  # a non-idempotent action may or may not have happened (see docs/report-format.md)


@dataclass(frozen=True, slots=True)
class Operation:
    """One validated line of a job."""

    key: str
    line: int
    tenant: str
    resource: str
    object_id: str
    action: Action
    patch: dict[str, Any] = field(default_factory=dict)
    sync_type: str = ""

    @property
    def idempotent(self) -> bool:
        return self.action is Action.UPDATE


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str


@dataclass(slots=True)
class Outcome:
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
    def uncertain_sync(cls, *, key: str, line: int, tenant: str, object_id: str) -> Outcome:
        """A sync that was being sent when an earlier run stopped: it may have happened."""
        return cls(
            key=key,
            line=line,
            tenant=tenant,
            object_id=object_id,
            action=Action.SYNC.value,
            status=Status.UNCERTAIN,
            error=ErrorInfo(
                "UncertainSync",
                "the run stopped while this sync was being sent; it may have "
                "happened, so it is not sent again (resume with --resend-uncertain to send it)",
            ),
            finished_at=utc_now(),
        )


@dataclass(slots=True)
class Progress:
    """Live counters of a run, fed by the engine and read by the progress display."""

    total: int = 0
    done: Counter[str] = field(default_factory=Counter)  # status -> count
    throttled: int = 0
    retries: int = 0
    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    throttled_by_tenant: Counter[str] = field(default_factory=Counter)
    limit_by_tenant: dict[str, tuple[int, float]] = field(default_factory=dict)  # writes per window, window s
    started: float = field(default_factory=time.monotonic)  # the run's clock (monotonic seconds) at its start

    @property
    def finished(self) -> int:
        return sum(self.done.values())

    def record(self, tenant: str, status: Status) -> None:
        """One operation reached its final status."""
        self.done[status.value] += 1
        self.per_tenant.setdefault(tenant, Counter())[status.value] += 1

    def record_throttled(self, tenant: str) -> None:
        self.throttled += 1
        self.throttled_by_tenant[tenant] += 1
