"""Tenant shards: which shard runs which tenants, computed from the job alone (pure, no I/O).

Every shard process computes the same partition from the same inputs (the job's fingerprint, its
valid operations per tenant, and N), so there is no coordinator and nothing to agree on at run time.
A tenant is never split: its writes are bound by its own per-tenant limit, so two shards writing one
tenant would only fight over that limit. See ``docs/scale-out.md``.

Balance: greedy longest-processing-time (LPT) scheduling. Tenants are placed heaviest first, each on
the currently lightest shard; ties go to the tenant name and then to the lower shard index, so the
result depends on the counts and N only (not on the order of lines in the job). LPT's largest shard
is at most 4/3 of the best possible one (Graham, 1969), and never more than the average plus the
largest tenant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import msgspec
import orjson

from bulkconn.errors import ResumeError, UsageError
from bulkconn.jobscan import JobScan
from bulkconn.report.format import ShardRecord
from bulkconn.shardenv import INDEX_ENV, MAX_SHARDS, SHARD_ENV

ORPHAN_SHARD = 0  # records lines whose tenant owns no valid operation (invalid lines, unknown aliases)
HEADER_FIELD = "shard"  # the report header's object describing the shard

# Graph's global limit per app across all tenants (https://learn.microsoft.com/graph/throttling-limits).
GLOBAL_REQUESTS_PER_WINDOW = 130_000
GLOBAL_WINDOW_S = 10.0
DEFAULT_GLOBAL_FRACTION = 0.9  # same margin as the per-tenant pacing (docs/engine.md)

_SHARD = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")
_INDEX = re.compile(r"^\s*(-?\d+)\s*$")


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (0-based), and where that came from (for messages)."""

    index: int
    count: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _checked(index: int, count: int, source: str) -> ShardSpec:
    if count < 1:
        raise UsageError(f"{source}: the number of shards must be at least 1, not {count}")
    if count > MAX_SHARDS:
        raise UsageError(f"{source}: at most {MAX_SHARDS} shards, not {count}")
    if not 0 <= index < count:
        raise UsageError(f"{source}: shard {index} is out of range; with {count} shard(s) use 0 to {count - 1}")
    return ShardSpec(index, count, source)


def parse_shard(text: str, *, source: str = "--shard") -> ShardSpec:
    """Parse ``K/N`` (K = 0..N-1). Raises :class:`UsageError` naming ``source`` when malformed or out of range."""
    match = _SHARD.match(text)
    if match is None:
        raise UsageError(f"{source}: expected K/N such as 0/4 (shard K of N, counted from 0), not {text!r}")
    return _checked(int(match[1]), int(match[2]), source)


def parse_index(text: str, count: int, *, source: str) -> ShardSpec:
    """Parse a bare index ``K`` given the number of shards (``JOB_COMPLETION_INDEX`` with ``--shards N``)."""
    match = _INDEX.match(text)
    if match is None:
        raise UsageError(f"{source}: expected a shard index (a whole number from 0 to {count - 1}), not {text!r}")
    return _checked(int(match[1]), count, source)


def resolve_shard(*, shard: str | None, shards: int | None, environ: Mapping[str, str]) -> ShardSpec | None:
    """Which shard this process runs, or ``None`` for an unsharded run.

    Precedence: ``--shard K/N``, then ``BULKCONN_SHARD`` (``K/N``, or ``K`` with ``--shards N``), then
    ``JOB_COMPLETION_INDEX`` with ``--shards N``. ``JOB_COMPLETION_INDEX`` alone never shards a run:
    a pod of some unrelated Indexed Job must not silently run a fraction of the job.
    """
    if shards is not None and shards < 1:
        raise UsageError(f"--shards: the number of shards must be at least 1, not {shards}")
    spec: ShardSpec | None = None
    if shard is not None:
        spec = parse_shard(shard)
    elif (value := environ.get(SHARD_ENV, "").strip()) != "":
        if "/" in value or shards is None:
            spec = parse_shard(value, source=SHARD_ENV)
        else:
            spec = parse_index(value, shards, source=SHARD_ENV)
    elif shards is not None:
        if (index := environ.get(INDEX_ENV, "").strip()) == "":
            raise UsageError(
                f"--shards {shards} needs this process's shard index: pass --shard K/{shards}, set "
                f"{SHARD_ENV}=K/{shards}, or run it as a Kubernetes Indexed Job (which sets {INDEX_ENV})"
            )
        spec = parse_index(index, shards, source=INDEX_ENV)
    if spec is not None and shards is not None and spec.count != shards:
        raise UsageError(f"{spec.source} says {spec.count} shard(s) but --shards says {shards}; they must agree")
    return spec


@dataclass(frozen=True, slots=True, eq=False)
class Partition:
    """Tenants assigned to ``count`` shards, and the fingerprint every shard report records."""

    count: int
    job_sha256: str
    assignment: Mapping[str, int]  # tenant -> shard index
    operations: tuple[int, ...]  # per shard: valid operations
    tenants: tuple[tuple[str, ...], ...]  # per shard: its tenants, sorted
    fingerprint: str

    def shard_of(self, tenant: str) -> int:
        """The shard that runs (and reports) ``tenant``; a tenant with no valid operation goes to shard 0."""
        return self.assignment.get(tenant, ORPHAN_SHARD)

    def owns(self, index: int, tenant: str) -> bool:
        return self.shard_of(tenant) == index

    @property
    def empty_shards(self) -> tuple[int, ...]:
        """Shards with no tenant (N larger than the number of tenants): they only write a header and a summary."""
        return tuple(i for i, names in enumerate(self.tenants) if not names)


def operation_counts(scan: JobScan) -> dict[str, int]:
    """Valid operations per tenant in the whole job: a resumed scan counts what it skipped too, so it never shifts."""
    return dict(scan.tenant_operations)


def partition_fingerprint(job_sha256: str, count: int, assignment: Mapping[str, int]) -> str:
    """SHA-256 over the job fingerprint, N and the sorted assignment (canonical JSON)."""
    body = {"job_sha256": job_sha256, "shards": count, "assignment": sorted(assignment.items())}
    return hashlib.sha256(orjson.dumps(body)).hexdigest()


def partition(counts: Mapping[str, int], count: int, *, job_sha256: str) -> Partition:
    """Assign each tenant (with its number of valid operations) to one of ``count`` shards, balanced by LPT.

    ``counts`` must come from the whole job (not a resumed scan that skipped finished operations),
    so that every shard, every time, sees the same numbers.
    """
    _checked(0, count, "--shards")
    if any(n < 0 for n in counts.values()):
        raise ValueError("operation counts cannot be negative")
    loads = [(0, index) for index in range(count)]  # (operations so far, shard index): a min-heap
    assignment: dict[str, int] = {}
    for tenant in sorted(counts, key=lambda name: (-counts[name], name)):
        load, index = heapq.heappop(loads)
        assignment[tenant] = index
        heapq.heappush(loads, (load + counts[tenant], index))
    operations = [0] * count
    members: list[list[str]] = [[] for _ in range(count)]
    for tenant, index in assignment.items():
        operations[index] += counts[tenant]
        members[index].append(tenant)
    return Partition(
        count=count,
        job_sha256=job_sha256,
        assignment=MappingProxyType(assignment),
        operations=tuple(operations),
        tenants=tuple(tuple(sorted(names)) for names in members),
        fingerprint=partition_fingerprint(job_sha256, count, assignment),
    )


def shard_report_path(job: Path, spec: ShardSpec) -> Path:
    """The default report of a shard: ``JOB.shard-K-of-N.report.jsonl`` next to the job."""
    stem = job.name.removesuffix(".jsonl")
    return job.with_name(f"{stem}.shard-{spec.index}-of-{spec.count}.report.jsonl")


def shard_record(spec: ShardSpec, plan: Partition) -> ShardRecord:
    """What a shard's report header records under ``"shard"`` (see ``docs/report-format.md``)."""
    return {
        "index": spec.index,
        "count": spec.count,
        "partition": plan.fingerprint,
        "tenants": len(plan.tenants[spec.index]),
        "operations": plan.operations[spec.index],
    }


def header_fields(spec: ShardSpec, plan: Partition) -> dict[str, object]:
    """The header's fields for a shard: ``{"shard": shard_record(...)}``."""
    return {HEADER_FIELD: shard_record(spec, plan)}


def restrict(scan: JobScan, plan: Partition, index: int, *, invalid: int) -> JobScan:
    """The part of ``scan`` that shard ``index`` runs: its tenants' operations, and ``invalid`` lines of its own.

    A selector line keeps only the shard's tenants (it is listed and expanded there only), and is dropped
    when it names none of them. ``actions`` keeps the whole job's counts (nothing reads it per shard).
    """
    offsets = {t: a for t, a in scan.offsets.items() if plan.owns(index, t)}
    selectors = {}
    for line, selector in scan.selectors.items():
        mine = tuple(t for t in selector.tenants if plan.owns(index, t))
        if mine:
            selectors[line] = dataclasses.replace(selector, tenants=mine)
    # Each selector line sits in the offsets of every tenant it names, but is one valid line.
    pairs = sum(len(selector.tenants) for selector in selectors.values())
    return msgspec.structs.replace(
        scan,
        offsets=offsets,
        line_numbers={t: a for t, a in scan.line_numbers.items() if plan.owns(index, t)},
        selectors=selectors,
        valid=sum(len(a) for a in offsets.values()) - pairs + len(selectors),
        invalid=invalid,
    )


def check_resume(header: Mapping[str, object], spec: ShardSpec | None, plan: Partition | None, *, report: Path) -> None:
    """Refuse to resume a report written by another shard, another N, another partition, or without shards."""
    recorded = header.get(HEADER_FIELD)
    if spec is None or plan is None:
        if isinstance(recorded, Mapping):
            raise ResumeError(
                f"{report} was written by shard {recorded.get('index')}/{recorded.get('count')}; "
                f"resume it with --shard {recorded.get('index')}/{recorded.get('count')}"
            )
        return
    if not isinstance(recorded, Mapping):
        raise ResumeError(f"{report} was written by an unsharded run; resume it without --shard/--shards")
    was = f"{recorded.get('index')}/{recorded.get('count')}"
    if recorded.get("count") != spec.count or recorded.get("index") != spec.index:
        raise ResumeError(
            f"{report} belongs to shard {was}, not {spec}: each shard resumes its own report "
            f"(the default name is JOB.shard-K-of-N.report.jsonl)"
        )
    if recorded.get("partition") != plan.fingerprint:
        raise ResumeError(
            f"{report}: the tenants of shard {spec} changed since it was started (partition "
            f"{str(recorded.get('partition'))[:12]}..., now {plan.fingerprint[:12]}...): the job or the "
            "configured tenants differ. Resuming could run a tenant in two shards; start a new set of reports"
        )


@dataclass(frozen=True, slots=True)
class GlobalShare:
    """The requests one shard may send per window so that all shards together stay under the app's limit."""

    requests_per_window: int
    window_s: float


def global_share(
    count: int,
    *,
    fraction: float = DEFAULT_GLOBAL_FRACTION,
    limit: int = GLOBAL_REQUESTS_PER_WINDOW,
    window_s: float = GLOBAL_WINDOW_S,
) -> GlobalShare:
    """Each of ``count`` shards paces to ``floor(limit * fraction / count)`` requests per window.

    ``fraction`` is the part of the app's global limit that all shards of this job may use together
    (lower it when other jobs or tools share the app registration). Each ``$batch`` sub-request counts.
    """
    _checked(0, count, "--shards")
    if not (0 < fraction <= 1) or math.isnan(fraction):
        raise UsageError(f"the global limit fraction must be above 0 and at most 1, not {fraction}")
    share = math.floor(limit * fraction / count)
    if share < 1:
        raise UsageError(f"{count} shards cannot share {fraction:g} of {limit} requests per {window_s:g} s")
    return GlobalShare(share, window_s)
