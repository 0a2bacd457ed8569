"""Merge the reports of a job's shards into one report (``docs/scale-out.md``; format: ``docs/report-format.md``).

The shards must belong together: one job fingerprint, one N, one partition fingerprint, each shard
exactly once, every run finished (unless ``partial``). The merged report holds one header, exactly one
line per operation (the latest ``result``, or the ``intent`` of a sync whose outcome no shard recorded),
and one summary. It is written to a temporary file and renamed, so a reader never sees half of it.

Reading holds one small entry per key (as :mod:`bulkconn.report.reader` does), never whole records: the lines
are copied in a second pass.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bulkconn import __version__
from bulkconn.errors import UsageError
from bulkconn.model import utc_now
from bulkconn.report.format import FORMAT_VERSION
from bulkconn.report.reader import iter_lines
from bulkconn.shards import HEADER_FIELD, ShardSpec, shard_report_path

EXAMPLES = 5  # colliding keys quoted in a refusal


@dataclass(slots=True)
class ShardState:
    """What one shard report says: its first header, the latest line index per key, how its runs ended."""

    path: Path
    header: dict[str, Any]
    index: int
    count: int
    partition: str
    latest: dict[str, int] = field(default_factory=dict)  # key -> index of its latest result/intent line
    tenants: set[str] = field(default_factory=set)
    runs: int = 0
    open_run: bool = False  # the last header has no summary after it (the process died)
    interrupted: bool = False  # the last summary says the run was interrupted
    duration_s: float = 0.0
    auth_failures: dict[str, str] = field(default_factory=dict)
    finished_at: str = ""
    torn_lines: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not (self.open_run or self.interrupted)

    @property
    def job_sha256(self) -> str:
        return str(self.header.get("job_sha256", ""))


@dataclass(frozen=True, slots=True)
class MergeResult:
    output: Path
    shards: int
    operations: int
    counts: dict[str, int]
    torn_lines: int
    unfinished: tuple[int, ...]


def _shard_of(header: dict[str, Any], path: Path) -> tuple[int, int, str]:
    shard = header.get(HEADER_FIELD)
    if not isinstance(shard, dict):
        raise UsageError(f"{path}: not a shard report (its header has no '{HEADER_FIELD}'; it was run without --shard)")
    index, count, partition = shard.get("index"), shard.get("count"), shard.get("partition")
    if not (isinstance(index, int) and isinstance(count, int) and isinstance(partition, str)):
        raise UsageError(f"{path}: the header's '{HEADER_FIELD}' is malformed: {shard!r}")
    return index, count, partition


def _note_record(state: ShardState, index: int, record: dict[str, Any]) -> None:
    kind = record.get("type")
    if kind == "header":
        state.runs += 1
        state.open_run, state.interrupted = True, False
        if record.get("job_sha256") != state.job_sha256 or _shard_of(record, state.path) != (
            state.index,
            state.count,
            state.partition,
        ):
            state.problems.append(f"{state.path}: run {state.runs} has another job or shard than run 1")
    elif kind in ("result", "intent"):
        state.latest[str(record.get("key", ""))] = index
        state.tenants.add(str(record.get("tenant") or ""))
    elif kind == "summary":
        state.open_run = False
        state.interrupted = bool(record.get("interrupted"))
        state.duration_s += float(record.get("duration_s") or 0)
        state.finished_at = str(record.get("finished_at") or state.finished_at)
        state.auth_failures.update(record.get("auth_failures") or {})


def read_shard(path: Path) -> ShardState:
    """Scan one shard report (blocking). Raises :class:`UsageError` if it is not a readable shard report."""
    state: ShardState | None = None
    torn = 0
    try:
        for index, record in iter_lines(path):
            if record is None:
                torn += 1
            elif state is None:
                if record.get("type") != "header":
                    raise UsageError(f"{path}: not a bulkconn report (the first line is not a header)")
                state = ShardState(path, record, *_shard_of(record, path))
                _note_record(state, index, record)
            else:
                _note_record(state, index, record)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the report: {exc.strerror or exc}") from None
    if state is None:
        raise UsageError(f"{path}: the report is empty")
    state.torn_lines = torn
    return state


def _set_problems(states: Sequence[ShardState]) -> list[str]:
    """Reports that do not belong to one job and one partition, or that repeat or miss a shard."""
    first = states[0]
    problems = [p for s in states for p in s.problems]
    for s in states[1:]:
        if s.job_sha256 != first.job_sha256:
            problems.append(
                f"{s.path} is a report of another job than {first.path} "
                f"(sha256 {s.job_sha256[:12]}... vs {first.job_sha256[:12]}...)"
            )
        elif s.count != first.count:
            problems.append(f"{s.path} is shard {s.index}/{s.count} but {first.path} is {first.index}/{first.count}")
        elif s.partition != first.partition:
            problems.append(
                f"{s.path} and {first.path} used different partitions of the job (the configured tenants changed)"
            )
    if problems:
        return problems
    seen: dict[int, list[Path]] = {}
    for s in states:
        seen.setdefault(s.index, []).append(s.path)
    for index, paths in sorted(seen.items()):
        if len(paths) > 1:
            problems.append(f"shard {index}/{first.count} is given {len(paths)} times: {', '.join(map(str, paths))}")
    missing = [i for i in range(first.count) if i not in seen]
    if missing:
        job = Path(str(first.header.get("job", "JOB.jsonl")))
        names = ", ".join(shard_report_path(job, ShardSpec(i, first.count)).name for i in missing[:EXAMPLES])
        more = f" and {len(missing) - EXAMPLES} more" if len(missing) > EXAMPLES else ""
        problems.append(
            f"missing shard(s) {', '.join(map(str, missing[:EXAMPLES]))}{more} of {first.count} "
            f"(default names: {names}{more})"
        )
    return problems


def _overlap_problems(states: Sequence[ShardState]) -> list[str]:
    """An operation or a tenant reported by two shards: the reports were not written by one partition."""
    owner: dict[str, int] = {}
    keys: list[str] = []
    for s in states:
        for key in s.latest:
            other = owner.setdefault(key, s.index)
            if other != s.index and len(keys) < EXAMPLES:
                keys.append(f"'{key}' (shards {other} and {s.index})")
    problems = [f"operations with results in two shards: {', '.join(keys)}"] if keys else []
    tenant_owner: dict[str, int] = {}
    for s in states:
        for tenant in sorted(s.tenants - {""}):
            other = tenant_owner.setdefault(tenant, s.index)
            if other != s.index:
                problems.append(f"tenant '{tenant}' has results in shards {other} and {s.index}")
    return problems


def check_mergeable(states: Sequence[ShardState], *, partial: bool = False) -> None:
    """Raise :class:`UsageError` listing every reason these shard reports cannot be merged."""
    if not states:
        raise UsageError("no reports to merge")
    problems = _set_problems(states) or _overlap_problems(states)
    if not partial:
        problems += [
            f"shard {s.index} ({s.path}) has not finished: its last run "
            f"{'was interrupted' if s.interrupted else 'has no summary (the process died)'}; "
            "resume it first, or merge a partial report"
            for s in states
            if not s.finished
        ]
    if problems:
        raise UsageError("cannot merge these reports:\n  " + "\n  ".join(problems))


def merged_header(states: Sequence[ShardState], *, run_id: str, now: str) -> dict[str, Any]:
    """One header for the merged report: the job's fingerprint and where each shard's lines came from."""
    first = min(states, key=lambda s: s.index).header
    return {
        "type": "header",
        "format": FORMAT_VERSION,
        "run_id": run_id,
        **{k: first.get(k) for k in ("job", "job_sha256", "job_bytes", "job_lines")},
        "bulkconn_version": __version__,
        "started_at": min(str(s.header.get("started_at", "")) for s in states),
        "resumed": False,
        "tenants": sorted({str(t) for s in states for t in s.header.get("tenants") or ()}),
        "settings": first.get("settings", {}),
        "merged": {
            "shards": states[0].count,
            "partition": states[0].partition,
            "merged_at": now,
            "reports": [{"index": s.index, "report": str(s.path), "runs": s.runs} for s in states],
        },
    }


def merged_summary(states: Sequence[ShardState], counts: Counter[str]) -> dict[str, Any]:
    """One summary: counts over every operation; the slowest shard's running time (they ran side by side)."""
    return {
        "type": "summary",
        "counts": dict(counts),
        "interrupted": not all(s.finished for s in states),
        "skipped_from_earlier_runs": 0,
        "auth_failures": {t: r for s in states for t, r in s.auth_failures.items()},
        "duration_s": round(max(s.duration_s for s in states), 3),
        "finished_at": max(s.finished_at for s in states),
    }


def _latest_lines(state: ShardState) -> Iterable[dict[str, Any]]:
    """Second pass over one report: only the line that counts for each key."""
    for index, record in iter_lines(state.path):
        # ``latest`` only ever points at result and intent lines, so the index alone picks them.
        if record is not None and state.latest.get(str(record.get("key", ""))) == index:
            yield record


def _write(sink: BinaryIO, record: dict[str, Any]) -> None:
    sink.write(orjson.dumps(record) + b"\n")


def write_merged(states: Sequence[ShardState], output: Path, *, run_id: str, now: str) -> Counter[str]:
    """Write the merged report atomically (temporary file in the same directory, fsync, rename)."""
    counts: Counter[str] = Counter()
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        # Owner-only, as every report is (report.writer): a report names tenants and objects.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as sink:
            _write(sink, merged_header(states, run_id=run_id, now=now))
            for state in sorted(states, key=lambda s: s.index):
                for record in _latest_lines(state):
                    counts[str(record.get("status")) if record["type"] == "result" else "uncertain"] += 1
                    _write(sink, record)
            _write(sink, merged_summary(states, counts))
            sink.flush()
            os.fsync(sink.fileno())
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(output.parent)
    return counts


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some file systems cannot open a directory, and then the rename is all we get."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def merge_reports(
    reports: Sequence[Path],
    output: Path,
    *,
    partial: bool = False,
    run_id: str | None = None,
    now: str | None = None,
) -> MergeResult:
    """Check that ``reports`` are the complete set of one job's shards and write their merge to ``output``.

    Raises :class:`UsageError` (nothing written) when they are not: another job, another N or
    partition, a shard missing or given twice, an operation or tenant in two shards, or (unless
    ``partial``) a shard whose last run did not finish.
    """
    targets = {r.resolve() for r in reports}
    if output.resolve() in targets:
        raise UsageError(f"{output}: the merged report must not replace one of the shard reports")
    states = [read_shard(path) for path in reports]
    check_mergeable(states, partial=partial)
    try:
        counts = write_merged(states, output, run_id=run_id or str(uuid.uuid4()), now=now or utc_now())
    except OSError as exc:
        raise UsageError(f"{output}: cannot write the merged report: {exc.strerror or exc}") from None
    return MergeResult(
        output=output,
        shards=states[0].count,
        operations=sum(counts.values()),
        counts=dict(counts),
        torn_lines=sum(s.torn_lines for s in states),
        unfinished=tuple(sorted(s.index for s in states if not s.finished)),
    )
