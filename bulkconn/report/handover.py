"""What a handover report says, read from a run's report and its job: per tenant, what changed, what failed, when.

The report holds results (``docs/report-format.md``); what each operation asked to change is in the job, at the
line the result names. The job is read only when it is the very file the report was written for (its sha256 is
in the header); otherwise the handover says why the changes are not listed instead of guessing.

One small row is held per operation of the chosen tenants (the latest result or intent of each key, as every
reader of reports counts it); rendering is :mod:`bulkconn.report.show`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bulkconn.errors import IDENTITY_UNREACHABLE, UsageError
from bulkconn.fingerprint import fingerprint
from bulkconn.jobscan import job_objects
from bulkconn.model import CONFLICT, Status
from bulkconn.report.reader import iter_lines
from bulkconn.suggest import did_you_mean

STATUS_ORDER = ("succeeded", "failed", "invalid", "uncertain", "skipped")
STATUS_LABEL = {
    "succeeded": "Succeeded",
    "failed": "Failed",
    "invalid": "Not sent (invalid)",
    "uncertain": "Uncertain",
    "skipped": "Skipped",
}
CONFLICTS_TITLE = "Left alone: changed since bulkconn wrote them"
CONFLICTS_NOTE = (
    "These objects no longer held what bulkconn wrote, so someone changed them since; bulkconn did not overwrite "
    "that change. Run the job again with --resume --force to overwrite it."
)
UNCHANGED_TITLE = "Already as asked: nothing sent"
UNASSIGNED_TITLE = "Job lines for no configured tenant"
UNASSIGNED_NOTE = "These lines named no tenant of the configuration (or none at all), so nothing was sent for them."
_VALUES_SHOWN = 3  # a property set to more distinct values than this is summarised as "N different values"
UNCERTAIN_WHY = (
    "The sync request was sent, but no answer was recorded (the connection broke or the run stopped), so Intune "
    "may or may not have started it. bulkconn never sends a sync twice on its own; run it again with "
    "--resume --resend-uncertain if a second sync is harmless."
)


@dataclass(frozen=True, slots=True)
class Change:
    """What one job line asked for: properties and their new values, or a sync."""

    resource: str = "exchangeConnector"
    patch: tuple[tuple[str, str], ...] = ()  # (property, value as shown to a reader)
    sync_type: str = ""

    def describe(self) -> str:
        if self.sync_type:
            return f"sync ({self.sync_type})"
        return "; ".join(f"{name} = {value}" for name, value in self.patch)


@dataclass(slots=True)
class Row:
    """One operation's latest state."""

    key: str
    line: int
    tenant: str
    object_id: str
    action: str
    status: str
    http_status: int | None = None
    attempts: int = 0
    throttled: int = 0
    error_code: str = ""
    error_message: str = ""
    finished_at: str = ""
    duration_ms: int = 0
    request_id: str = ""
    change: Change | None = None
    reason_code: str = ""  # why a skipped operation was not sent: Unchanged, Conflict
    reason_message: str = ""  # what was found when the object was read

    @property
    def why(self) -> str:
        """The reason in plain words, for anything that did not succeed (a skip: its code and what was found)."""
        if self.status == Status.UNCERTAIN:
            return UNCERTAIN_WHY
        if self.status == Status.SUCCEEDED:
            return ""
        if self.status == Status.SKIPPED:
            return f"{self.reason_code}: {self.reason_message}" if self.reason_code else "Not sent, no reason recorded"
        return readable_error(self.error_code, self.error_message, self.http_status)

    @property
    def label(self) -> str:
        """The status as a reader sees it: ``Skipped (Conflict)`` says more than ``Skipped``."""
        label = STATUS_LABEL.get(self.status, self.status)
        return f"{label} ({self.reason_code})" if self.status == Status.SKIPPED and self.reason_code else label

    @property
    def conflict(self) -> bool:
        return self.status == Status.SKIPPED and self.reason_code == CONFLICT


@dataclass(slots=True)
class TenantReport:
    """One tenant's operations, in job order."""

    alias: str
    rows: list[Row] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)

    @property
    def conflicts(self) -> list[Row]:
        """Skipped as ``Conflict``: left alone because the object changed since bulkconn wrote it."""
        return [row for row in self.rows if row.conflict]

    @property
    def unchanged(self) -> list[Row]:
        """Skipped because the object already held what the line asked for (or another reason, not a conflict)."""
        return [row for row in self.rows if row.status == Status.SKIPPED and not row.conflict]

    def outcome(self) -> str:
        """``8 operations: 7 succeeded, 1 skipped (1 conflict)``."""
        return counts_phrase(self.counts, len(self.conflicts))

    @property
    def started_at(self) -> datetime | None:
        starts = [t - timedelta(milliseconds=r.duration_ms) for r in self.rows if (t := parse_time(r.finished_at))]
        return min(starts, default=None)

    @property
    def finished_at(self) -> datetime | None:
        return max((t for r in self.rows if (t := parse_time(r.finished_at))), default=None)

    def with_status(self, *statuses: str) -> list[Row]:
        return [row for row in self.rows if row.status in statuses]

    def changed_properties(self) -> dict[str, Counter[str]]:
        """Property -> Counter of the new values applied (succeeded updates only)."""
        changed: dict[str, Counter[str]] = {}
        for row in self.with_status(Status.SUCCEEDED):
            for name, value in row.change.patch if row.change else ():
                changed.setdefault(name, Counter())[value] += 1
        return changed

    def reasons(self) -> Counter[str]:
        """How many operations failed for each plain-words reason."""
        return Counter(row.why for row in self.with_status(Status.FAILED, Status.INVALID))


@dataclass(slots=True)
class Handover:
    """Everything a handover report shows."""

    report: Path
    job: Path
    job_note: str  # why the changes are not listed, or "" when they are
    runs: int
    started_at: str
    finished_at: str
    duration_s: float
    state: str  # "finished", "interrupted" or "incomplete" (no summary after the last start)
    bulkconn_version: str
    tenants: list[TenantReport]  # the configured tenants (or those asked for)
    unassigned: list[Row] = field(default_factory=list)  # invalid lines naming no configured tenant

    def runs_phrase(self) -> str:
        """``12 s over 2 runs``."""
        return f"{span(self.duration_s)} over {self.runs} run{'' if self.runs == 1 else 's'}"

    @property
    def counts(self) -> Counter[str]:
        """Operations by status over every tenant shown."""
        total: Counter[str] = Counter(row.status for row in self.unassigned)
        for tenant in self.tenants:
            total.update(tenant.counts)
        return total

    @property
    def conflicts(self) -> int:
        return sum(len(tenant.conflicts) for tenant in self.tenants)

    def outcome(self) -> str:
        """``60 operations: 58 succeeded, 2 failed``, and whether the run finished."""
        notes = {"interrupted": " (interrupted: resume to finish)", "incomplete": " (the run did not finish)"}
        return counts_phrase(self.counts, self.conflicts) + notes.get(self.state, "")


def readable_error(code: str, message: str, http_status: int | None) -> str:
    """A reason a customer can read: what kind of problem, then Graph's (or bulkconn's) own words."""
    lead = _lead(code, message, http_status)
    text = " ".join(message.split()) or code or "unknown error"
    if not lead or text.casefold().startswith(lead.split(",")[0].casefold()):
        return text[:1].upper() + text[1:]
    return f"{lead}: {text}"


def when(moment: datetime | str | None) -> str:
    """A moment as people read it: ``2026-05-04 09:30:12 UTC`` (or an em dash when unknown)."""
    at = parse_time(moment) if isinstance(moment, str) else moment
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "\u2014"


def span(seconds: float) -> str:
    """A duration as people read it: ``under 0.1 s``, ``0.4 s``, ``12 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def counts_phrase(counts: Counter[str], conflicts: int = 0) -> str:
    """``20 operations: 19 succeeded, 1 failed``; skips say how many were conflicts: ``1 skipped (1 conflict)``."""
    total = sum(counts.values())
    of_them = {Status.SKIPPED.value: f" ({conflicts} conflict{'' if conflicts == 1 else 's'})" if conflicts else ""}
    parts = [f"{counts[status]} {status}{of_them.get(status, '')}" for status in STATUS_ORDER if counts.get(status)]
    noun = "operation" if total == 1 else "operations"
    return f"{total} {noun}: {', '.join(parts)}" if parts else f"no {noun}"


def change_summary(tenant: TenantReport) -> list[tuple[str, str, int]]:
    """``(property, new value, objects)`` of what succeeded; many distinct values are one row, not one each."""
    summary: list[tuple[str, str, int]] = []
    for name, values in sorted(tenant.changed_properties().items()):
        if len(values) <= _VALUES_SHOWN:
            summary += [(name, value, count) for value, count in values.most_common()]
        else:
            summary.append((name, f"{len(values)} different values (see each object)", sum(values.values())))
    syncs = Counter(r.change.sync_type for r in tenant.with_status(Status.SUCCEEDED) if r.change and r.change.sync_type)
    summary += [("sync", sync_type, count) for sync_type, count in sorted(syncs.items())]
    return summary


def _lead(code: str, message: str, http_status: int | None) -> str:
    if message.startswith("authentication failed"):
        return "Sign-in to the tenant failed, nothing was sent"
    if code == IDENTITY_UNREACHABLE:
        return "The sign-in service could not be reached, nothing was sent"
    if code == "InvalidLine":
        return "Not sent, the job line is invalid"
    if code.startswith("BatchResponse"):
        return "Microsoft Graph's batch answer was malformed"
    if code in ("ConnectionError", "ConnectionReset", "Timeout", "TLSError", "HttpError"):
        return "No answer from Microsoft Graph"
    leads = {
        400: "Rejected by Microsoft Graph",
        401: "Not signed in",
        403: "Permission missing",
        404: "Not found in this tenant",
        409: "Conflict",
        429: "Throttled until the retry budget ran out",
    }
    if http_status in leads:
        return leads[http_status]
    if http_status is not None and http_status >= 500:
        return "Microsoft Graph service error"
    return ""


def parse_time(text: str) -> datetime | None:
    """A report timestamp (UTC, ISO 8601 with ``Z``), or None when absent or unreadable."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC) if text else None
    except ValueError:
        return None


def _row(record: dict[str, Any]) -> Row:
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    reason = record.get("reason") if isinstance(record.get("reason"), dict) else {}
    assert isinstance(error, dict) and isinstance(reason, dict)
    http = record.get("http_status")
    return Row(
        key=str(record.get("key", "")),
        line=int(record.get("line") or 0),
        tenant=str(record.get("tenant") or ""),
        object_id=str(record.get("id") or ""),
        action=str(record.get("action") or ""),
        status=str(record.get("status") or Status.FAILED),
        http_status=http if isinstance(http, int) else None,
        attempts=int(record.get("attempts") or 0),
        throttled=int(record.get("throttled") or 0),
        error_code=str(error.get("code") or ""),
        error_message=str(error.get("message") or ""),
        finished_at=str(record.get("finished_at") or ""),
        duration_ms=int(record.get("duration_ms") or 0),
        request_id=str(record.get("request_id") or ""),
        reason_code=str(reason.get("code") or ""),
        reason_message=str(reason.get("message") or ""),
    )


def _intent_row(record: dict[str, Any]) -> Row:
    """A sync whose intent is the latest line: sent, or about to be, when the run stopped."""
    row = _row(record)  # an intent has no answer: no HTTP status, attempts or error
    row.action = row.action or "sync"
    row.status = Status.UNCERTAIN
    row.finished_at = str(record.get("at") or "")
    return row


@dataclass(slots=True)
class _Scan:
    header: dict[str, Any] | None = None
    runs: int = 0
    finished_at: str = ""
    duration_s: float = 0.0
    state: str = "incomplete"
    rows: dict[str, Row] = field(default_factory=dict)

    def add(self, record: dict[str, Any], wanted: Collection[str] | None) -> None:
        kind = record.get("type")
        if kind == "header":
            self.header = self.header or record
            self.runs += 1
            self.state = "incomplete"
        elif kind == "summary":
            self.finished_at = str(record.get("finished_at") or self.finished_at)
            self.duration_s += float(record.get("duration_s") or 0)
            self.state = "interrupted" if record.get("interrupted") else "finished"
        elif kind in ("result", "intent") and (wanted is None or record.get("tenant") in wanted):
            self.rows[str(record.get("key", ""))] = _row(record) if kind == "result" else _intent_row(record)


def _scan(report: Path, wanted: Collection[str] | None) -> _Scan:
    if not report.is_file():
        raise UsageError(f"{report}: no such report")
    scan = _Scan()
    for _, record in iter_lines(report):
        if record is None:
            continue  # a line cut off by a crash: its operation has no result yet
        if scan.header is None and record.get("type") != "header":
            break
        scan.add(record, wanted)
    if scan.header is None:
        raise UsageError(f"{report}: not a bulkconn report (the first line is not a header)")
    return scan


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _change(data: dict[str, Any], defaults: dict[str, Any]) -> Change:
    resource = str(data.get("resource", defaults.get("resource", "exchangeConnector")))
    if data.get("action", defaults.get("action")) == "sync":
        return Change(resource, sync_type=str(data.get("syncType", defaults.get("syncType", ""))))
    patch = dict(defaults.get("patch") or {})
    line_patch = data.get("patch")
    patch.update(line_patch if isinstance(line_patch, dict) else {})
    # `@odata.type` (an undo or export line for a collection of several kinds) names the object's type: not a change.
    shown = tuple((str(name), _shown(value)) for name, value in patch.items() if not str(name).startswith("@"))
    return Change(resource, shown)


def _find_job(recorded: str, report: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    job = Path(recorded)
    if not job.is_file() and (report.parent / job.name).is_file():
        job = report.parent / job.name  # the run was started from another folder; the job sits next to its report
    return job


def _attach_changes(rows: Iterable[Row], job: Path, header: dict[str, Any]) -> str:
    """Give each row the change its job line asked for; return why that was not possible, or ""."""
    if not job.is_file():
        return f"the job {job} is not there, so the changes are not listed (pass --job PATH)"
    if fingerprint(job).sha256 != header.get("job_sha256"):
        return f"the job {job} changed since this report was written, so the changes are not listed"
    by_line = {row.line: row for row in rows}
    defaults: dict[str, Any] = {}
    for number, data in job_objects(job):
        if not isinstance(data, dict):
            continue
        if "defaults" in data and isinstance(data["defaults"], dict):
            defaults = data["defaults"]
        elif number in by_line:
            by_line[number].change = _change(data, defaults)
    return ""


def _check_tenants(asked: Collection[str], known: Collection[str]) -> None:
    for alias in asked:
        if alias not in known:
            raise UsageError(
                f"tenant '{alias}' is not in this report{did_you_mean(alias, known)} (it has: {', '.join(known)})"
            )


def load_handover(report: Path, *, job: Path | None = None, tenants: Collection[str] = ()) -> Handover:
    """Read ``report`` (and its job) into a :class:`Handover` of ``tenants`` (default: every tenant).

    Raises:
        UsageError: the report is missing or not a report, or a tenant asked for is not in it.
    """
    scan = _scan(report, set(tenants) or None)
    header = scan.header or {}
    known = _configured(header, scan.rows.values())
    _check_tenants(tenants, known)
    job_path = _find_job(str(header.get("job", "")), report, job)
    note = _attach_changes(scan.rows.values(), job_path, header)
    by_tenant: dict[str, TenantReport] = {alias: TenantReport(alias) for alias in (tenants or known)}
    unassigned: list[Row] = []
    for row in sorted(scan.rows.values(), key=lambda r: r.line):
        if row.tenant in by_tenant:
            by_tenant[row.tenant].rows.append(row)
        else:  # an invalid line naming 'contosso', '*' or no tenant: not a tenant of this run
            unassigned.append(row)
    return Handover(
        report=report,
        job=job_path,
        job_note=note,
        runs=scan.runs,
        started_at=str(header.get("started_at", "")),
        finished_at=scan.finished_at,
        duration_s=scan.duration_s,
        state=scan.state,
        bulkconn_version=str(header.get("bulkconn_version", "")),
        tenants=list(by_tenant.values()),
        unassigned=unassigned,
    )


def _configured(header: dict[str, Any], rows: Iterable[Row]) -> list[str]:
    """The run's tenants: as configured (the header); for a header without them, those of lines that were valid."""
    named = header.get("tenants")
    if isinstance(named, list) and named:
        return sorted(str(alias) for alias in named)
    return sorted({row.tenant for row in rows if row.status != Status.INVALID and row.tenant})
