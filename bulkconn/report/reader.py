"""Reading reports back: the latest state of every operation, summaries, and a job of the failures.

A report may hold several runs (each resume appends a header, results and a summary). For every
operation the latest result counts. A line cut off by a crash is ignored (and the operation redone).
Reading holds one small entry per key, never whole records, so a million-line report is fine: a line-number key
costs one byte (:mod:`bulkconn.report.keycodes`), and :func:`read_state` decodes only the six fields it needs
from each line (msgspec skips the rest without building it: twice as fast as decoding the whole line).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from bulkconn.errors import ResumeError
from bulkconn.job import job_objects
from bulkconn.model import Status
from bulkconn.report import format as fmt
from bulkconn.report.keycodes import KeyCodes, KeySet

# One small int per key instead of the status string: a million-key report stays small in memory.
_CODES = {status: code for code, status in enumerate(fmt.FINAL_STATUSES, start=1)}
_NAMES = {v: k for k, v in _CODES.items()}
_INTENT = 6  # a sync was about to be sent and no result followed
_FAILED = _CODES[Status.FAILED]  # what a result with an unknown status counts as


@dataclass(slots=True)
class ReportState:
    """The first header (what job this report is about) and the latest state of every key."""

    path: Path
    header: dict[str, Any]
    latest: KeyCodes = field(default_factory=KeyCodes)  # key -> status code (or _INTENT)
    intents: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # key -> (tenant, id, line) awaiting result
    torn_lines: int = 0
    runs: int = 0
    has_expansion: bool = False  # selector expansion records are present (read them with bulkconn.expansion)
    read_bytes: int = 0  # where reading stopped: update_state goes on from here after a run appended to the file

    def status_of(self, key: str) -> str | None:
        code = self.latest.get(key)
        return None if code is None or code == _INTENT else _NAMES[code]

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for code, n in self.latest.code_counts().items():
            counts[_NAMES.get(code, Status.UNCERTAIN.value)] += n
        return counts

    def skip_keys(self, *, retry_failed: bool, recheck_invalid: bool, resend_uncertain: bool) -> Set[str]:
        """Keys a resume must not send again (a view of ``latest``: nothing is copied)."""
        redo = {_CODES[Status.FAILED]} if retry_failed else set()
        if recheck_invalid:
            redo.add(_CODES[Status.INVALID])
        if resend_uncertain:
            redo |= {_CODES[Status.UNCERTAIN], _INTENT}
        return KeySet(self.latest, redo)

    def uncertain_intents(self) -> list[tuple[str, str, str, int]]:
        """Syncs that may have been sent before a crash: (key, tenant, id, line)."""
        return [(key, *where) for key, where in self.intents.items() if self.latest.get(key) == _INTENT]


def iter_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Every line as (index, record); a torn or unreadable line gives (index, None)."""
    with path.open("rb") as handle:
        for index, raw in enumerate(handle):
            if raw.strip():
                yield index, fmt.decode(raw)


class _Line(msgspec.Struct):
    """What :func:`read_state` needs of a report line (absent fields as ``dict.get`` would give them)."""

    type: Any = None
    key: Any = ""
    status: Any = None
    tenant: Any = ""
    id: Any = ""
    line: Any = 0


_decode_line = msgspec.json.Decoder(_Line).decode
_EXPANSION_KINDS_SEQ = ("expansion", "expansion_done")  # a tuple: a malformed "type" need not be hashable


def read_state(path: Path) -> ReportState:
    """Scan a report (blocking; call it in a thread)."""
    if not path.is_file():
        raise ResumeError(f"{path}: no report to resume (run without --resume first)")
    state = _read(path, None, 0)
    if state is None:
        raise ResumeError(f"{path}: the report is empty; run without --resume")
    return state


def update_state(state: ReportState, path: Path) -> ReportState:
    """Read what was appended to ``path`` since ``state`` was read (a run's results): as reading it all again."""
    updated = _read(path, state, state.read_bytes)
    assert updated is state
    return state


def _read(path: Path, state: ReportState | None, offset: int) -> ReportState | None:
    torn = 0
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                record = _decode_line(raw)
            except msgspec.DecodeError:  # torn, not JSON, or not an object: as fmt.decode's None
                torn += 1
                continue
            if record.type == "header":
                if state is None:
                    state = ReportState(path, fmt.decode(raw) or {})
                state.runs += 1
                continue
            if state is None:
                raise ResumeError(f"{path}: not a bulkconn report (the first line is not a header)")
            if record.type == "result":  # most lines: inlined
                key = str(record.key)
                state.latest[key] = _CODES.get(str(record.status), _FAILED)
                if state.intents:
                    state.intents.pop(key, None)
            else:
                _take(state, record)
    if state is not None:
        state.torn_lines += torn
        state.read_bytes = offset
    return state


def _take(state: ReportState, record: _Line) -> None:
    """Note one line's effect other than a result's: an intent, or the presence of expansion records."""
    kind = record.type
    if kind == "intent":
        key = str(record.key)
        state.latest[key] = _INTENT
        state.intents[key] = (str(record.tenant), str(record.id), int(record.line))
    elif kind in _EXPANSION_KINDS_SEQ:
        state.has_expansion = True


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
    """Counts of the latest result per operation, by status, tenant and error code (two lean passes)."""
    latest: dict[str, int] = {}
    for index, record in iter_lines(path):
        if record is not None and record.get("type") == "result":
            latest[str(record.get("key"))] = index
    wanted = set(latest.values())
    by_status: Counter[str] = Counter()
    by_tenant: dict[str, Counter[str]] = {}
    by_error: Counter[str] = Counter()
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
        status = str(record.get("status"))
        by_status[status] += 1
        by_tenant.setdefault(str(record.get("tenant") or "(none)"), Counter())[status] += 1
        if record.get("error"):
            by_error[str(record["error"].get("code"))] += 1
        attempts += int(record.get("attempts") or 0)
        throttled += int(record.get("throttled") or 0)
        max_attempts = max(max_attempts, int(record.get("attempts") or 0))
    return {
        "report": str(path),
        "operations": len(latest),
        "by_status": dict(by_status),
        "by_tenant": {t: dict(c) for t, c in sorted(by_tenant.items())},
        "by_error_code": dict(by_error.most_common()),
        "attempts_total": attempts,
        "attempts_max": max_attempts,
        "throttled_total": throttled,
        "runs": runs,
        "duration_s": round(duration_s, 3),
        "started_at": started,
        "finished_at": finished,
        "torn_lines": torn,
    }


def write_failed_job(state: ReportState, job: Path, out: Path, *, include_uncertain: bool = False) -> int:
    """Write the original job lines of every operation whose latest result failed; return how many."""
    wanted = {Status.FAILED.value} | ({Status.UNCERTAIN.value} if include_uncertain else set())
    keys = {
        key
        for key in state.latest
        if state.status_of(key) in wanted or (include_uncertain and state.latest[key] == _INTENT)
    }
    written = 0
    first = True
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as sink:
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
    tmp.replace(out)
    return written
