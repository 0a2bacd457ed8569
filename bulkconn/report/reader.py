"""Reading reports back: the latest state of every operation, summaries, and a job of the failures.

A report may hold several runs (each resume appends a header, results and a summary). For every
operation the latest result counts. A line cut off by a crash is ignored (and the operation redone).
Reading holds one small entry per key, never whole records, so a million-line report is fine: a line-number key
costs one byte (:mod:`bulkconn.report.keycodes`), and :func:`read_state` decodes only the fields it needs from
each line (msgspec skips the rest without building it: about twice as fast as decoding the whole line).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from bulkconn import __version__
from bulkconn.errors import ResumeError
from bulkconn.jobscan import job_objects
from bulkconn.model import CONFLICT, NO_TENANT, Action, Status, tenant_order
from bulkconn.report import format as fmt
from bulkconn.report.keycodes import MAX_LINE as _MAX_LINE
from bulkconn.report.keycodes import KeyCodes, KeySet, LineProof

if TYPE_CHECKING:
    from bulkconn.report.lines import StateLine

# One small int per key instead of the status string: a million-key report stays small in memory.
_CODES = {status: code for code, status in enumerate(fmt.FINAL_STATUSES, start=1)}
_NAMES = {v: k for k, v in _CODES.items()}
_INTENT = 6  # a sync was about to be sent and no result followed
_FAILED = _CODES[Status.FAILED]  # what a result with an unknown status counts as
_CONFLICT = 7  # skipped with reason Conflict: counts as skipped, and is a problem (the asked state was not reached)
_NAMES[_CONFLICT] = Status.SKIPPED.value
_HEADER_MAX_BYTES = 1 << 20  # a header is a few hundred bytes
# The statuses whose code needs nothing else of the line (a skip may be a Conflict: see _result_code).
_PLAIN_CODES = {status: code for status, code in _CODES.items() if status != Status.SKIPPED}


@dataclass(slots=True)
class ReportState:
    """The first header (what job this report is about) and the latest state of every key."""

    path: Path
    header: dict[str, Any]
    latest: KeyCodes = field(default_factory=KeyCodes)  # key -> status code (or _INTENT)
    intents: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # key -> (tenant, id, line) awaiting result
    intent_actions: dict[str, str] = field(default_factory=dict)  # key -> its action, when not a sync (a wipe...)
    torn_lines: int = 0
    runs: int = 0
    has_expansion: bool = False  # selector expansion records are present (read them with bulkconn.expansion)
    read_bytes: int = 0  # where reading stopped: update_state goes on from here after a run appended to the file
    jobs: set[tuple[str, str]] = field(default_factory=set)  # (job_sha256, bulkconn_version) of every run's header

    def status_of(self, key: str) -> str | None:
        code = self.latest.get(key)
        return None if code is None or code == _INTENT else _NAMES[code]

    def counts(self) -> Counter[str]:
        return self._by_status(lambda code: True)

    def conflicts(self) -> int:
        """Operations whose latest result is a skip as ``Conflict`` (left alone: changed since bulkconn wrote it)."""
        return self.latest.code_counts()[_CONFLICT]

    def skip_keys(
        self,
        *,
        retry_failed: bool,
        recheck_invalid: bool,
        resend_uncertain: bool,
        overwrite_conflicts: bool = False,
        job_sha256: str = "",
    ) -> Set[str]:
        """Keys a resume must not send again (a view of ``latest``: nothing is copied).

        ``job_sha256`` (of the job being resumed, when it is the report's): when every run of the report read that
        job with this version of bulkconn, the set carries a :class:`LineProof` of the lines it skips that were
        valid operations (any latest result but ``invalid``), so that the scan need not check them again.
        """
        redo = _redo(retry_failed, recheck_invalid, resend_uncertain, overwrite_conflicts)
        proof = None
        if job_sha256 and self.jobs == {(job_sha256, __version__)}:
            proven = set(range(1, 256)) - redo - {_CODES[Status.INVALID]}
            proof = LineProof(self.latest, proven, job_sha256)
        return KeySet(self.latest, redo, proof=proof)

    def split_counts(
        self, *, retry_failed: bool, recheck_invalid: bool, resend_uncertain: bool, overwrite_conflicts: bool = False
    ) -> tuple[Counter[str], Counter[str]]:
        """(what a resume skips, what it does again), by latest status (an intent counts as uncertain)."""
        redo = _redo(retry_failed, recheck_invalid, resend_uncertain, overwrite_conflicts)
        return self._by_status(lambda code: code not in redo), self._by_status(lambda code: code in redo)

    def _by_status(self, wanted: Callable[[int], bool]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for code, n in self.latest.code_counts().items():
            if wanted(code):
                counts[_NAMES.get(code, Status.UNCERTAIN.value)] += n
        return counts

    def take(self, record: StateLine) -> None:
        """Note a record other than a header: a result or intent (other kinds change nothing but a flag)."""
        kind = record.type
        if kind == "result":
            key = str(record.key)
            self.latest[key] = _result_code(record)
            if self.intents:
                self.intents.pop(key, None)
                self.intent_actions.pop(key, None)
        elif kind == "intent":
            key = str(record.key)
            self.latest[key] = _INTENT
            self.intents[key] = (str(record.tenant), str(record.id), int(record.line))
            if record.action != Action.SYNC:
                self.intent_actions[key] = str(record.action)
        elif kind in _EXPANSION_KINDS:
            self.has_expansion = True

    def uncertain_intents(self) -> list[tuple[str, str, str, int]]:
        """Syncs (and other actions, see ``intent_actions``) that may have been sent before a crash:
        (key, tenant, id, line)."""
        return [(key, *where) for key, where in self.intents.items() if self.latest.get(key) == _INTENT]


def _redo(retry_failed: bool, recheck_invalid: bool, resend_uncertain: bool, overwrite_conflicts: bool) -> set[int]:
    """The codes a resume does again."""
    redo = {_CODES[Status.FAILED]} if retry_failed else set()
    if overwrite_conflicts:
        redo.add(_CONFLICT)
    if recheck_invalid:
        redo.add(_CODES[Status.INVALID])
    if resend_uncertain:
        redo |= {_CODES[Status.UNCERTAIN], _INTENT}
    return redo


_EXPANSION_KINDS = ("expansion", "expansion_done")  # a tuple: a malformed "type" need not be hashable


def _result_code(record: StateLine) -> int:
    reason = record.reason
    if record.status == Status.SKIPPED and isinstance(reason, dict) and reason.get("code") == CONFLICT:
        return _CONFLICT
    return _CODES.get(str(record.status), _FAILED)


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
    return update_state(ReportState(path, require_report(path)), path)


def update_state(state: ReportState, path: Path) -> ReportState:
    """Read what was appended to ``path`` since ``state`` was read (a run's results): as reading it all again."""
    from bulkconn.report.lines import DecodeError, decode_state_line  # msgspec: only once a report is read

    offset, torn = state.read_bytes, 0
    latest, intents = state.latest, state.intents
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            offset += len(raw)
            try:
                record = decode_state_line(raw)
            except DecodeError:  # torn, not JSON, or not an object: as fmt.decode's None (a blank line is neither)
                torn += bool(raw.strip())
                continue
            kind = record.type
            if kind == "result" and not intents:
                # Most lines of a big report: a result keyed by its line number, with a plain status. Set here
                # what take() would set, without its steps (a million of them are most of a resume's start).
                status, number = record.status, record.line
                code = _PLAIN_CODES.get(status) if status.__class__ is str else None
                # str() of an int is the canonical line-number key: "7", never "07" (see keycodes.line_number)
                if (
                    code is not None
                    and number.__class__ is int
                    and 0 < number < _MAX_LINE
                    and record.key == str(number)
                ):
                    tenant = record.tenant
                    latest.set_line(number, code, tenant if tenant.__class__ is str else "")
                    continue
            if kind == "header":
                state.runs += 1
                state.jobs.add((str(record.job_sha256), str(record.bulkconn_version)))
            else:
                state.take(record)
    state.torn_lines += torn
    state.read_bytes = offset
    return state


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


def combine_states(states: Sequence[ReportState]) -> ReportState:
    """Several reports of one job (the shards of a run, say) read as one: for each key, the report given last wins.

    Raises :class:`ResumeError` when they are reports of different jobs.
    """
    first = states[0]
    combined = ReportState(first.path, first.header)
    for state in states:
        if state.header.get("job_sha256") != first.header.get("job_sha256"):
            raise ResumeError(f"{state.path} is a report of another job than {first.path}")
        combined.latest.update(state.latest)
        combined.intents.update(state.intents)
        combined.torn_lines += state.torn_lines
        combined.runs += state.runs
    return combined


def summarize(path: Path | Sequence[Path]) -> dict[str, Any]:
    """Counts of the latest result (or intent) per operation, by status, tenant and error code (two lean passes).

    A key whose latest line is an ``intent`` had a sync in flight when its run stopped: it counts as
    ``uncertain``, as ``--resume`` will record it. Several reports (of one job) are read as one, for each key
    the report given last winning; their running times are not added but the longest is taken, as shards run
    side by side. Raises :class:`ResumeError` for a file that is not a report, or reports of different jobs.
    """
    paths = [path] if isinstance(path, Path) else list(path)
    latest: dict[str, tuple[int, int]] = {}  # key -> (report, line index) of its latest result or intent
    first_headers = [require_report(p) for p in paths]
    for number, (report, header) in enumerate(zip(paths, first_headers, strict=True)):
        if header.get("job_sha256") != first_headers[0].get("job_sha256"):
            raise ResumeError(f"{report} is a report of another job than {paths[0]}")
        for index, record in iter_lines(report):
            if record is not None and record.get("type") in ("result", "intent"):
                latest[str(record.get("key"))] = (number, index)
    wanted = set(latest.values())
    tally = _Tally(configured={str(alias) for header in first_headers for alias in header.get("tenants") or ()})
    for number, report in enumerate(paths):
        tally.read(report, {index for n, index in wanted if n == number})
    return {
        "report": ", ".join(map(str, paths)),
        "reports": [str(p) for p in paths],
        "operations": len(latest),
        **tally.as_json(),
    }


@dataclass(slots=True)
class _Tally:
    """The second pass of :func:`summarize`: counts over the lines that count, and each report's runs."""

    by_status: Counter[str] = field(default_factory=Counter)
    by_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    by_error: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)  # skipped operations by reason code
    configured: set[str] = field(default_factory=set)  # the reports' tenants; other lines count as NO_TENANT
    attempts: int = 0
    throttled: int = 0
    max_attempts: int = 0
    runs: int = 0
    duration_s: float = 0.0
    started: str = ""
    finished: str = ""
    torn: int = 0

    def read(self, path: Path, wanted: set[int]) -> None:
        duration_s = 0.0
        for index, record in iter_lines(path):
            if record is None:
                self.torn += 1
                continue
            if record.get("type") == "header":
                self.runs += 1
                started = str(record.get("started_at", ""))
                self.started = min(self.started, started) if self.started else started
            elif record.get("type") == "summary":
                self.finished = max(self.finished, str(record.get("finished_at", "")))
                duration_s += float(record.get("duration_s") or 0)
            if index in wanted:
                self.count(record)
        self.duration_s = max(self.duration_s, duration_s)

    def count(self, record: dict[str, Any]) -> None:
        status = str(record.get("status", Status.UNCERTAIN.value))  # an intent: a sync that may have run
        self.by_status[status] += 1
        self.by_tenant.setdefault(_tenant_row(record, self.configured), Counter())[status] += 1
        if record.get("error"):
            self.by_error[str(record["error"].get("code"))] += 1
        self.by_reason.update(_skip_reason(record))
        self.attempts += int(record.get("attempts") or 0)
        self.throttled += int(record.get("throttled") or 0)
        self.max_attempts = max(self.max_attempts, int(record.get("attempts") or 0))

    def as_json(self) -> dict[str, Any]:
        return {
            "by_status": dict(self.by_status),
            "by_tenant": {t: dict(self.by_tenant[t]) for t in sorted(self.by_tenant, key=tenant_order)},
            "by_error_code": dict(self.by_error.most_common()),
            "by_skip_reason": dict(self.by_reason.most_common()),
            "attempts_total": self.attempts,
            "attempts_max": self.max_attempts,
            "throttled_total": self.throttled,
            "runs": self.runs,
            "duration_s": round(self.duration_s, 3),
            "started_at": self.started,
            "finished_at": self.finished,
            "torn_lines": self.torn,
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
