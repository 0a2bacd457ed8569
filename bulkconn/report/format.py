"""The report contract (``docs/report-format.md``): its version, one typed shape per record, encode and decode.

A report is JSON Lines; each line's ``type`` is ``header``, ``intent``, ``result`` or ``summary``, plus (format 1,
added) ``expansion`` and ``expansion_done`` (what selector lines selected, :mod:`bulkconn.expansion`) and ``backup``
(a pre-image, :mod:`bulkconn.precheck`). Everything
that writes or reads a report line goes through this module, so "what does a report line contain" has one
answer. Fields are only added in a minor change; a change of meaning bumps :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import msgspec
import orjson
from msgspec import UNSET, Struct, UnsetType

from bulkconn.model import ErrorInfo, Operation, Outcome, Status

FORMAT_VERSION = 1
FINAL_STATUSES = tuple(s.value for s in Status)  # succeeded, failed, invalid, skipped, uncertain
PROBLEM_STATUSES = (Status.FAILED.value, Status.INVALID.value, Status.UNCERTAIN.value)  # exit code 1


class ErrorRecord(TypedDict):
    code: str
    message: str


class ShardRecord(TypedDict):
    """The shard a run belongs to (``run --shard K/N``): which one, of how many, and of which partition."""

    index: int
    count: int
    partition: str  # SHA-256 over the job's fingerprint, N and the tenant -> shard assignment
    tenants: int  # this shard's tenants
    operations: int  # this shard's valid operations in the whole job


class HeaderRecord(TypedDict):
    type: Literal["header"]
    format: int
    run_id: str
    job: str
    job_sha256: str
    job_bytes: int
    job_lines: int
    bulkconn_version: str
    started_at: str
    resumed: bool
    tenants: list[str]
    settings: dict[str, Any]
    shard: NotRequired[ShardRecord]  # only in the report of a shard


class IntentRecord(TypedDict):
    type: Literal["intent"]
    key: str
    line: int
    tenant: str
    id: str
    action: str
    at: str


class ResultRecord(TypedDict):
    type: Literal["result"]
    key: str
    line: int
    tenant: str
    id: str
    action: str
    status: str
    http_status: int | None
    attempts: int
    throttled: int
    error: ErrorRecord | None
    request_id: str
    client_request_id: str
    duration_ms: int
    finished_at: str
    reason: NotRequired[ErrorRecord]  # only on ``skipped`` results of --skip-unchanged or an undo job


class ExpansionRecord(TypedDict):
    """One object a selector line selected in one tenant (written before the first write)."""

    type: Literal["expansion"]
    line: int
    tenant: str
    key: str
    id: str


class ExpansionDoneRecord(TypedDict):
    """Closes one selector line's expansion in one tenant: ``count`` matches of ``listed`` objects."""

    type: Literal["expansion_done"]
    line: int
    tenant: str
    count: int
    listed: int


class BackupRecord(TypedDict):
    """The pre-image of one operation's object, written and fsynced before its write is sent."""

    type: Literal["backup"]
    key: str
    line: int
    tenant: str
    resource: str
    id: str
    before: dict[str, Any]
    patch: dict[str, Any]
    at: str
    odata_type: NotRequired[str]


class SummaryRecord(TypedDict):
    type: Literal["summary"]
    counts: dict[str, int]
    interrupted: bool
    skipped_from_earlier_runs: int
    auth_failures: dict[str, str]
    duration_s: float
    finished_at: str


Record = (
    HeaderRecord | IntentRecord | ResultRecord | SummaryRecord | ExpansionRecord | ExpansionDoneRecord | BackupRecord
)


def header(
    *,
    run_id: str,
    job: str,
    job_sha256: str,
    job_bytes: int,
    job_lines: int,
    bulkconn_version: str,
    started_at: str,
    resumed: bool,
    tenants: list[str],
    settings: dict[str, Any],
    shard: ShardRecord | None = None,
) -> HeaderRecord:
    record: HeaderRecord = {
        "type": "header",
        "format": FORMAT_VERSION,
        "run_id": run_id,
        "job": job,
        "job_sha256": job_sha256,
        "job_bytes": job_bytes,
        "job_lines": job_lines,
        "bulkconn_version": bulkconn_version,
        "started_at": started_at,
        "resumed": resumed,
        "tenants": tenants,
        "settings": settings,
    }
    if shard is not None:
        record["shard"] = shard
    return record


def intent(op: Operation, *, at: str) -> IntentRecord:
    """An action that is not idempotent (a sync, a wipe...) is about to be sent."""
    return {
        "type": "intent",
        "key": op.key,
        "line": op.line,
        "tenant": op.tenant,
        "id": op.object_id,
        "action": str(op.action),
        "at": at,
    }


def result(outcome: Outcome) -> ResultRecord:
    """One operation's final state."""
    error = outcome.error
    record: ResultRecord = {
        "type": "result",
        "key": outcome.key,
        "line": outcome.line,
        "tenant": outcome.tenant,
        "id": outcome.object_id,
        "action": outcome.action,
        "status": outcome.status.value,
        "http_status": outcome.http_status,
        "attempts": outcome.attempts,
        "throttled": outcome.throttled,
        "error": None if error is None else {"code": error.code, "message": error.message},
        "request_id": outcome.request_id,
        "client_request_id": outcome.client_request_id,
        "duration_ms": outcome.duration_ms,
        "finished_at": outcome.finished_at,
    }
    if outcome.reason is not None:
        record["reason"] = {"code": outcome.reason.code, "message": outcome.reason.message}
    return record


def summary(
    *,
    counts: dict[str, int],
    interrupted: bool,
    skipped_from_earlier_runs: int,
    auth_failures: dict[str, str],
    duration_s: float,
    finished_at: str,
) -> SummaryRecord:
    return {
        "type": "summary",
        "counts": counts,
        "interrupted": interrupted,
        "skipped_from_earlier_runs": skipped_from_earlier_runs,
        "auth_failures": auth_failures,
        "duration_s": duration_s,
        "finished_at": finished_at,
    }


def encode(record: Record) -> bytes:
    """One report line, newline included."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


class ResultLine(Struct, gc=False, tag="result", tag_field="type", rename={"object_id": "id"}):  # gc: model.Operation
    """A ``result`` line as msgspec encodes it (:func:`result_line`): the very bytes :func:`encode` gives for
    :func:`result`'s record, same fields in the same order, ``reason`` left out when unset."""

    key: str
    line: int
    tenant: str
    object_id: str
    action: str
    status: Status
    http_status: int | None
    attempts: int
    throttled: int
    error: ErrorInfo | None
    request_id: str
    client_request_id: str
    duration_ms: int
    finished_at: str
    reason: ErrorInfo | UnsetType = UNSET


def result_line(o: Outcome) -> ResultLine:
    """One operation's final state, as :func:`result` gives it, for :func:`encode_lines` (a copy: ``o`` may change)."""
    return ResultLine(
        o.key,
        o.line,
        o.tenant,
        o.object_id,
        o.action,
        o.status,
        o.http_status,
        o.attempts,
        o.throttled,
        o.error,
        o.request_id,
        o.client_request_id,
        o.duration_ms,
        o.finished_at,
        UNSET if o.reason is None else o.reason,
    )


# The writer encodes a step's result lines (up to 20 for a $batch answer) in one call: a third of the CPU of
# encoding each with orjson from the record's dict.
encode_lines = msgspec.json.Encoder().encode_lines
"""``encode_lines(lines)``: the lines of a list of :class:`ResultLine`, each ending in a newline."""


def decode(raw: bytes) -> dict[str, Any] | None:
    """A line's record, or None for a torn or unreadable line (readers ignore those)."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def outcome_of(record: ResultRecord) -> Outcome:
    """The outcome a ``result`` record holds (the inverse of :func:`result`)."""
    error, reason = record["error"], record.get("reason")
    return Outcome(
        key=record["key"],
        line=record["line"],
        tenant=record["tenant"],
        object_id=record["id"],
        action=record["action"],
        status=Status(record["status"]),
        http_status=record["http_status"],
        attempts=record["attempts"],
        throttled=record["throttled"],
        error=None if error is None else ErrorInfo(error["code"], error["message"]),
        request_id=record["request_id"],
        client_request_id=record["client_request_id"],
        duration_ms=record["duration_ms"],
        finished_at=record["finished_at"],
        reason=None if reason is None else ErrorInfo(reason["code"], reason["message"]),
    )
