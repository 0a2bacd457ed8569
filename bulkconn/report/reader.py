"""Reading reports back: the latest state of every operation, summaries, and a job of the failures.

A report may hold several runs (each resume appends a header, results and a summary). For every
operation the latest result counts. A line cut off by a crash is ignored (and the operation redone).
Reading holds one small entry per key, never whole records, so a million-line report is fine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bulkconn.errors import ResumeError
from bulkconn.job import job_objects
from bulkconn.model import CONFLICT, NO_TENANT, Status, tenant_order
from bulkconn.report import format as fmt

# One small int per key instead of the status string: a million-key report stays small in memory.
_CODES = {status: code for code, status in enumerate(fmt.FINAL_STATUSES, start=1)}
_NAMES = {v: k for k, v in _CODES.items()}
_INTENT = 6  # a sync was about to be sent and no result followed
_CONFLICT = 7  # skipped with reason Conflict: counts as skipped, and is a problem (the asked state was not reached)
_NAMES[_CONFLICT] = Status.SKIPPED.value
_HEADER_MAX_BYTES = 1 << 20  # a header is a few hundred bytes


@dataclass(slots=True)
class ReportState:
    """The first header (what job this report is about) and the latest state of every key."""

    path: Path
    header: dict[str, Any]
    latest: dict[str, int] = field(default_factory=dict)  # key -> status code (or _INTENT)
    intents: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # key -> (tenant, id, line) awaiting result
    torn_lines: int = 0
    runs: int = 0

    def status_of(self, key: str) -> str | None:
        code = self.latest.get(key)
        return None if code is None or code == _INTENT else _NAMES[code]

    def counts(self) -> Counter[str]:
        return Counter(_NAMES.get(code, Status.UNCERTAIN.value) for code in self.latest.values())

    def conflicts(self) -> int:
        """Operations whose latest result is a skip as ``Conflict`` (left alone: changed since bulkconn wrote it)."""
        return sum(1 for code in self.latest.values() if code == _CONFLICT)

    def skip_keys(
        self, *, retry_failed: bool, recheck_invalid: bool, resend_uncertain: bool, overwrite_conflicts: bool = False
    ) -> set[str]:
        """Keys a resume must not send again."""
        redo = {_CODES[Status.FAILED]} if retry_failed else set()
        if overwrite_conflicts:
            redo.add(_CONFLICT)
        if recheck_invalid:
            redo.add(_CODES[Status.INVALID])
        if resend_uncertain:
            redo |= {_CODES[Status.UNCERTAIN], _INTENT}
        return {key for key, code in self.latest.items() if code not in redo}

    def uncertain_intents(self) -> list[tuple[str, str, str, int]]:
        """Syncs that may have been sent before a crash: (key, tenant, id, line)."""
        return [(key, *self.intents[key]) for key, code in self.latest.items() if code == _INTENT]


def iter_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Every line as (index, record); a torn or unreadable line gives (index, None)."""
    with path.open("rb") as handle:
        for index, raw in enumerate(handle):
            if raw.strip():
                yield index, fmt.decode(raw)


def require_report(path: Path) -> dict[str, Any]:
    """The first header of the report at ``path``; :class:`ResumeError` (a usage error) when it is not a report.

    A report's first line is always its header (written before anything else), so a file whose first
    line is anything else (a job, a configuration file, binary data) is refused here, saying what it is not.
    """
    if not path.is_file():
        raise ResumeError(f"{path}: no such report")
    with path.open("rb") as handle:
        first = handle.readline(_HEADER_MAX_BYTES)  # bounded: the file may be anything, one huge "line" too
        while first and not first.strip():
            first = handle.readline(_HEADER_MAX_BYTES)
    if not first:
        raise ResumeError(f"{path}: the report is empty")
    record = fmt.decode(first)
    if record is None or record.get("type") != "header" or "format" not in record:
        raise ResumeError(f"{path} is not a bulkconn report: its first line is not a report header")
    return record


def read_state(path: Path) -> ReportState:
    """Scan a report (blocking; call it in a thread)."""
    if not path.is_file():
        raise ResumeError(f"{path}: no report to resume (run without --resume first)")
    state = ReportState(path, require_report(path))
    torn = 0
    for _, record in iter_lines(path):
        if record is None:
            torn += 1
            continue
        kind = record.get("type")
        if kind == "header":
            state.runs += 1
            continue
        key = str(record.get("key", ""))
        if kind == "result":
            state.latest[key] = _result_code(record)
            state.intents.pop(key, None)
        elif kind == "intent":
            state.latest[key] = _INTENT
            state.intents[key] = (str(record.get("tenant", "")), str(record.get("id", "")), int(record.get("line", 0)))
    state.torn_lines = torn
    return state


def _result_code(record: dict[str, Any]) -> int:
    reason = record.get("reason")
    if record.get("status") == Status.SKIPPED and isinstance(reason, dict) and reason.get("code") == CONFLICT:
        return _CONFLICT
    return _CODES.get(str(record.get("status")), _CODES[Status.FAILED])


def check_job(state: ReportState, sha256: str, size: int, lines: int, *, force: bool) -> None:
    """Refuse to resume against a job file that is not the one the report was started with."""
    header = state.header
    if header.get("job_sha256") == sha256 or force:
        return
    raise ResumeError(
        f"the job file changed since {state.path} was started: it had {header.get('job_lines', '?')} lines and "
        f"{header.get('job_bytes', '?')} bytes (sha256 {str(header.get('job_sha256'))[:12]}...), it now has "
        f"{lines} lines and {size} bytes (sha256 {sha256[:12]}...). Operations are keyed by line number unless "
        "lines carry a 'key', so resuming could skip or repeat the wrong objects. Run it into a new report "
        "(--report NEW without --resume), or pass --force if you are sure the keys still name the same operations."
    )


def summarize(path: Path) -> dict[str, Any]:
    """Counts of the latest result (or intent) per operation, by status, tenant and error code (two lean passes).

    A key whose latest line is an ``intent`` had a sync in flight when its run stopped: it counts as
    ``uncertain``, as ``--resume`` will record it. Raises :class:`ResumeError` for a file that is not a report.
    """
    configured = set(require_report(path).get("tenants") or ())
    latest: dict[str, int] = {}
    for index, record in iter_lines(path):
        if record is not None and record.get("type") in ("result", "intent"):
            latest[str(record.get("key"))] = index
    wanted = set(latest.values())
    by_status: Counter[str] = Counter()
    by_tenant: dict[str, Counter[str]] = {}
    by_error: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    attempts = throttled = max_attempts = 0
    runs = 0
    duration_s = 0.0
    started = finished = ""
    torn = 0
    for index, record in iter_lines(path):
        if record is None:
            torn += 1
            continue
        if record.get("type") == "header":
            runs += 1
            started = started or str(record.get("started_at", ""))
        elif record.get("type") == "summary":
            finished = str(record.get("finished_at", finished))
            duration_s += float(record.get("duration_s") or 0)
        if index not in wanted:
            continue
        status = str(record.get("status", Status.UNCERTAIN.value))  # an intent: a sync that may have run
        by_status[status] += 1
        by_tenant.setdefault(_tenant_row(record, configured), Counter())[status] += 1
        if record.get("error"):
            by_error[str(record["error"].get("code"))] += 1
        by_reason.update(_skip_reason(record))
        attempts += int(record.get("attempts") or 0)
        throttled += int(record.get("throttled") or 0)
        max_attempts = max(max_attempts, int(record.get("attempts") or 0))
    return {
        "report": str(path),
        "operations": len(latest),
        "by_status": dict(by_status),
        "by_tenant": {t: dict(by_tenant[t]) for t in sorted(by_tenant, key=tenant_order)},
        "by_error_code": dict(by_error.most_common()),
        "by_skip_reason": dict(by_reason.most_common()),
        "attempts_total": attempts,
        "attempts_max": max_attempts,
        "throttled_total": throttled,
        "runs": runs,
        "duration_s": round(duration_s, 3),
        "started_at": started,
        "finished_at": finished,
        "torn_lines": torn,
    }


def _tenant_row(record: dict[str, Any], configured: set[str]) -> str:
    """The tenant row a result counts in: its tenant, or :data:`NO_TENANT` for a line naming none configured."""
    tenant = str(record.get("tenant") or "")
    return tenant if tenant in configured or (tenant and not configured) else NO_TENANT


def _skip_reason(record: dict[str, Any]) -> list[str]:
    """``[code]`` of a skipped result's reason (``Unchanged``, ``Conflict``), else ``[]``."""
    reason = record.get("reason")
    if record.get("status") != Status.SKIPPED or not isinstance(reason, dict):
        return []
    return [str(reason.get("code"))]


def _failed_keys(state: ReportState, *, include_uncertain: bool) -> set[str]:
    wanted = {Status.FAILED.value} | ({Status.UNCERTAIN.value} if include_uncertain else set())
    return {
        key
        for key in state.latest
        if state.status_of(key) in wanted or (include_uncertain and state.latest[key] == _INTENT)
    }


def failed_count(state: ReportState, *, include_uncertain: bool = False) -> int:
    """How many operations :func:`write_failed_job` would write."""
    return len(_failed_keys(state, include_uncertain=include_uncertain))


def write_failed_job(state: ReportState, job: Path, sink: BinaryIO, *, include_uncertain: bool = False) -> int:
    """Write the original job lines of every operation whose latest result failed to ``sink``; return how many."""
    keys = _failed_keys(state, include_uncertain=include_uncertain)
    written = 0
    first = True
    for number, data in job_objects(job):  # a CSV or UTF-16 job's failures are written as JSON Lines
        if not isinstance(data, dict):
            continue
        if first and "defaults" in data:
            sink.write(orjson.dumps(data) + b"\n")  # the failures need the same defaults
        first = False
        if "defaults" in data:
            continue
        key = str(data.get("key", number))
        if key in keys:
            if "key" not in data:
                data["key"] = f"{job.name}:{number}"  # keep the original line as a stable name
            sink.write(orjson.dumps(data) + b"\n")
            written += 1
    return written
