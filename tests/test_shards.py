"""Tenant shards: the partition, its fingerprint, shard parsing, report names, resume checks and the global share."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import orjson
import pytest

from bulkconn.errors import ResumeError, UsageError
from bulkconn.jobscan import scan_job
from bulkconn.shards import (
    GLOBAL_REQUESTS_PER_WINDOW,
    ShardSpec,
    check_resume,
    global_share,
    header_fields,
    operation_counts,
    parse_shard,
    partition,
    resolve_shard,
    restrict,
    shard_report_path,
)

SHA = "a" * 64


def brute_force_best(counts: dict[str, int], shards: int) -> int:
    """The smallest possible largest shard, by trying every assignment (small inputs only)."""
    best = sum(counts.values())
    for choice in itertools.product(range(shards), repeat=len(counts)):
        loads = [0] * shards
        for shard, n in zip(choice, counts.values(), strict=True):
            loads[shard] += n
        best = min(best, max(loads))
    return best


def test_partition_places_heaviest_tenants_first_on_the_lightest_shard() -> None:
    """LPT on a known example: 10, 9, 8, 7, 1 over two shards gives 18 and 17 operations."""
    plan = partition({"a": 10, "b": 9, "c": 8, "d": 7, "e": 1}, 2, job_sha256=SHA)
    assert plan.operations == (18, 17)
    assert plan.tenants == (("a", "d", "e"), ("b", "c"))
    assert dict(plan.assignment) == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0}


@pytest.mark.parametrize("seed", range(25))
def test_partition_is_within_lpt_bounds_and_never_splits_a_tenant(seed: int) -> None:
    """Every tenant lands in exactly one shard; the largest shard is within 4/3 of the optimum."""
    rng = random.Random(seed)
    shards = rng.randint(2, 3)
    counts = {f"t{i}": rng.choice([1, 2, 5, 40, 100, rng.randint(1, 300)]) for i in range(rng.randint(1, 8))}
    plan = partition(counts, shards, job_sha256=SHA)
    members = [t for names in plan.tenants for t in names]
    assert sorted(members) == sorted(counts)  # each tenant once: never split, never lost
    assert sum(plan.operations) == sum(counts.values())
    assert max(plan.operations) <= sum(counts.values()) / shards + max(counts.values())
    assert max(plan.operations) * 3 <= brute_force_best(counts, shards) * 4


def test_partition_balances_many_tenants_closely() -> None:
    """1,000 tenants of 1..200 operations over 8 shards: no shard exceeds the average by more than one tenant."""
    rng = random.Random(7)
    counts = {f"tenant-{i:04d}": rng.randint(1, 200) for i in range(1000)}
    plan = partition(counts, 8, job_sha256=SHA)
    assert max(plan.operations) - min(plan.operations) <= max(counts.values())


def test_partition_ignores_the_order_tenants_are_given_in() -> None:
    """The same counts in any order give the same assignment and fingerprint (ties go by tenant name)."""
    counts = {f"t{i}": 5 for i in range(7)} | {"big": 20, "mid": 10}
    shuffled = list(counts.items())
    random.Random(3).shuffle(shuffled)
    one, two = partition(counts, 3, job_sha256=SHA), partition(dict(shuffled), 3, job_sha256=SHA)
    assert dict(one.assignment) == dict(two.assignment)
    assert one.fingerprint == two.fingerprint
    assert partition({"b": 5, "a": 5}, 2, job_sha256=SHA).tenants == (("a",), ("b",))


def test_fingerprint_changes_with_n_job_and_assignment_only() -> None:
    """A different N or job gives a different fingerprint; the same inputs give the same one (restarts)."""
    counts = {"a": 3, "b": 2, "c": 1}
    base = partition(counts, 2, job_sha256=SHA).fingerprint
    assert partition(dict(counts), 2, job_sha256=SHA).fingerprint == base
    assert partition(counts, 3, job_sha256=SHA).fingerprint != base
    assert partition(counts, 2, job_sha256="b" * 64).fingerprint != base
    assert partition({"a": 3, "b": 2, "c": 9}, 2, job_sha256=SHA).fingerprint != base


def test_more_shards_than_tenants_leaves_empty_shards_and_orphans_go_to_shard_0() -> None:
    """Spare shards get no tenant; a tenant with no valid operation (only invalid lines) belongs to shard 0."""
    plan = partition({"a": 1, "b": 1}, 4, job_sha256=SHA)
    assert plan.empty_shards == (2, 3)
    assert plan.shard_of("b") == 1
    assert plan.shard_of("not-configured") == 0
    assert plan.owns(0, "not-configured") and not plan.owns(1, "a")


def _write_job(path: Path, lines: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def test_partition_from_a_scan_is_stable_when_job_lines_are_reordered(tmp_path: Path) -> None:
    """Reordering a job's lines keeps the assignment (the counts are the same); its fingerprint follows the file."""
    tenants = [f"t{i}" for i in range(6)]
    rng = random.Random(5)
    lines: list[dict[str, object]] = [
        {"tenant": t, "id": f"conn-{t}-{n}", "patch": {"serverName": f"mail{n}.example.com"}}
        for t in tenants
        for n in range(rng.randint(1, 30))
    ]
    _write_job(tmp_path / "a.jsonl", lines)
    rng.shuffle(lines)
    _write_job(tmp_path / "b.jsonl", lines)
    scans = [scan_job(tmp_path / name, tenants, on_invalid=lambda i: None) for name in ("a.jsonl", "b.jsonl")]
    plans = [partition(operation_counts(s), 4, job_sha256=s.sha256) for s in scans]
    assert dict(plans[0].assignment) == dict(plans[1].assignment)
    assert plans[0].fingerprint != plans[1].fingerprint  # line numbers are keys: a reordered job is another job


def test_operation_counts_of_a_resumed_scan_are_those_of_the_whole_job(tmp_path: Path) -> None:
    """A resumed scan skips finished operations but still counts them: the partition never moves on resume."""
    lines: list[dict[str, object]] = [
        {"tenant": t, "id": f"c{n}", "patch": {"serverName": "m.example.com"}} for t in "aab" for n in range(2)
    ]
    _write_job(tmp_path / "j.jsonl", [*lines, {"tenant": "b", "id": "c9", "patch": {"nope": 1}}])
    whole = scan_job(tmp_path / "j.jsonl", ["a", "b"], on_invalid=lambda i: None)
    resumed = scan_job(tmp_path / "j.jsonl", ["a", "b"], on_invalid=lambda i: None, skip_keys={"1", "2", "5"})
    assert resumed.skipped == 3 and resumed.valid == 3
    assert operation_counts(resumed) == operation_counts(whole) == {"a": 4, "b": 2}


def test_restrict_keeps_only_the_shards_tenants(tmp_path: Path) -> None:
    """A shard's scan holds its own tenants' operations only, and the invalid lines it was told it owns."""
    lines: list[dict[str, object]] = [
        {"tenant": t, "id": f"c{n}", "patch": {"serverName": "m.example.com"}} for t in "aab" for n in range(3)
    ]
    _write_job(tmp_path / "j.jsonl", lines)
    scan = scan_job(tmp_path / "j.jsonl", ["a", "b"], on_invalid=lambda i: None)
    plan = partition(operation_counts(scan), 2, job_sha256=scan.sha256)
    assert plan.tenants == (("a",), ("b",))
    mine = restrict(scan, plan, 1, invalid=2)
    assert set(mine.offsets) == set(mine.line_numbers) == {"b"}
    assert (mine.valid, mine.invalid, scan.valid) == (3, 2, 9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "shard 4 is out of range; with 4 shard\\(s\\) use 0 to 3"),
        ("-1/4", "out of range"),
        ("0/0", "at least 1"),
        ("1-4", "expected K/N"),
        ("a/4", "expected K/N"),
        ("", "expected K/N"),
        ("1/200000", "at most 100000"),
    ],
)
def test_parse_shard_refuses_clearly(text: str, message: str) -> None:
    """Malformed or out-of-range shard specs name the option and say what is allowed."""
    with pytest.raises(UsageError, match=f"--shard: .*{message}"):
        parse_shard(text)


def test_parse_shard_accepts_k_of_n() -> None:
    """'K/N' with surrounding spaces parses; str() gives it back."""
    spec = parse_shard(" 3 / 8 ")
    assert (spec.index, spec.count, str(spec)) == (3, 8, "3/8")


def test_resolve_shard_precedence_and_sources() -> None:
    """--shard beats BULKCONN_SHARD, which beats JOB_COMPLETION_INDEX (used only with --shards)."""
    env = {"BULKCONN_SHARD": "1/3", "JOB_COMPLETION_INDEX": "2"}
    assert resolve_shard(shard="0/3", shards=None, environ=env) == ShardSpec(0, 3, "--shard")
    assert resolve_shard(shard=None, shards=None, environ=env) == ShardSpec(1, 3, "BULKCONN_SHARD")
    assert resolve_shard(shard=None, shards=3, environ={"BULKCONN_SHARD": "2"}) == ShardSpec(2, 3, "BULKCONN_SHARD")
    assert resolve_shard(shard=None, shards=3, environ={"JOB_COMPLETION_INDEX": "2"}) == ShardSpec(
        2, 3, "JOB_COMPLETION_INDEX"
    )
    assert resolve_shard(shard=None, shards=None, environ={"JOB_COMPLETION_INDEX": "2"}) is None


@pytest.mark.parametrize(
    ("shard", "shards", "env", "message"),
    [
        (None, 4, {}, "--shards 4 needs this process's shard index"),
        (None, 4, {"JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX: shard 4 is out of range"),
        (None, 4, {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX: expected a shard index"),
        (None, 0, {"JOB_COMPLETION_INDEX": "0"}, "--shards: .* at least 1"),
        ("1/3", 4, {}, "--shard says 3 shard\\(s\\) but --shards says 4"),
        (None, None, {"BULKCONN_SHARD": "2"}, "BULKCONN_SHARD: expected K/N"),
        (None, None, {"BULKCONN_SHARD": "5/5"}, "BULKCONN_SHARD: shard 5 is out of range"),
    ],
)
def test_resolve_shard_errors_name_their_source(
    shard: str | None, shards: int | None, env: dict[str, str], message: str
) -> None:
    """Each mistake says which flag or variable was wrong and what would be right."""
    with pytest.raises(UsageError, match=message):
        resolve_shard(shard=shard, shards=shards, environ=env)


def test_default_shard_report_name() -> None:
    """JOB.shard-K-of-N.report.jsonl next to the job (".jsonl" dropped once, as for unsharded reports)."""
    assert shard_report_path(Path("/jobs/rename.jsonl"), ShardSpec(2, 4)) == Path(
        "/jobs/rename.shard-2-of-4.report.jsonl"
    )
    assert shard_report_path(Path("job.txt"), ShardSpec(0, 1)).name == "job.txt.shard-0-of-1.report.jsonl"


def test_check_resume_refuses_another_shard_n_or_partition() -> None:
    """A shard resumes only its own report, with the same N and partition; sharded and unsharded do not mix."""
    plan = partition({"a": 2, "b": 1}, 2, job_sha256=SHA)
    spec = ShardSpec(1, 2)
    header = header_fields(spec, plan)
    report = Path("r.jsonl")
    check_resume(header, spec, plan, report=report)  # its own report: fine
    check_resume({}, None, None, report=report)  # unsharded on unsharded: fine
    with pytest.raises(ResumeError, match="belongs to shard 1/2, not 0/2"):
        check_resume(header, ShardSpec(0, 2), plan, report=report)
    other = partition({"a": 2, "b": 1}, 3, job_sha256=SHA)
    with pytest.raises(ResumeError, match="belongs to shard 1/2, not 1/3"):
        check_resume(header, ShardSpec(1, 3), other, report=report)
    changed = partition({"a": 2, "b": 1}, 2, job_sha256="c" * 64)
    with pytest.raises(ResumeError, match="tenants of shard 1/2 changed"):
        check_resume(header, spec, changed, report=report)
    with pytest.raises(ResumeError, match="resume it with --shard 1/2"):
        check_resume(header, None, None, report=report)
    with pytest.raises(ResumeError, match="unsharded run"):
        check_resume({}, spec, plan, report=report)


def test_header_records_the_shard_and_its_share_of_the_partition() -> None:
    """The header's 'shard' object names K, N, the partition fingerprint and the shard's size."""
    plan = partition({"a": 2, "b": 1, "c": 1}, 2, job_sha256=SHA)
    assert header_fields(ShardSpec(1, 2), plan) == {
        "shard": {"index": 1, "count": 2, "partition": plan.fingerprint, "tenants": 2, "operations": 2}
    }


@pytest.mark.parametrize("shards", [1, 2, 3, 7, 64, 1000])
def test_global_shares_together_stay_under_the_app_limit(shards: int) -> None:
    """N shards each pacing to their share never exceed the configured fraction of 130,000 per 10 s."""
    share = global_share(shards)
    assert share.window_s == 10.0
    assert share.requests_per_window * shards <= GLOBAL_REQUESTS_PER_WINDOW * 0.9
    assert (share.requests_per_window + 1) * shards > GLOBAL_REQUESTS_PER_WINDOW * 0.9  # and nothing is wasted
    assert global_share(shards, fraction=0.5).requests_per_window * shards <= GLOBAL_REQUESTS_PER_WINDOW // 2


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_global_share_refuses_a_fraction_outside_0_to_1(fraction: float) -> None:
    """The fraction is a share of the limit: above 0, at most 1."""
    with pytest.raises(UsageError, match="fraction"):
        global_share(2, fraction=fraction)


def test_global_share_refuses_more_shards_than_requests() -> None:
    """A share below one request per window cannot be paced: say so instead of rounding up past the limit."""
    with pytest.raises(UsageError, match="cannot share"):
        global_share(1000, fraction=0.001)


def test_a_selector_line_for_every_tenant_is_split_between_the_shards(tmp_path: Path) -> None:
    """`"tenant": "*"` weighs one operation per tenant; each shard keeps the line for its own tenants only."""
    lines: list[dict[str, object]] = [{"key": "all", "tenant": "*", "select": "all", "patch": {"exchangeAlias": "a"}}]
    lines += [{"tenant": "a", "id": f"c{n}", "patch": {"serverName": "m.example.com"}} for n in range(3)]
    _write_job(tmp_path / "j.jsonl", lines)
    scan = scan_job(tmp_path / "j.jsonl", ["a", "b", "c"], on_invalid=lambda i: pytest.fail(str(i)))
    assert operation_counts(scan) == {"a": 4, "b": 1, "c": 1}
    plan = partition(operation_counts(scan), 2, job_sha256=scan.sha256)
    assert plan.tenants == (("a",), ("b", "c"))
    first, second = (restrict(scan, plan, k, invalid=0) for k in range(2))
    assert [s.tenants for s in first.selectors.values()] == [("a",)] and first.valid == 4
    assert [s.tenants for s in second.selectors.values()] == [("b", "c")] and second.valid == 1
    assert scan.selectors[1].tenants == ("a", "b", "c")  # the whole job's scan is left as it was
