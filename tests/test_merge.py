"""Merging shard reports: one job, one partition, every shard once, one final line per operation."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from bulkconn.errors import UsageError
from bulkconn.merge import merge_reports
from bulkconn.model import Action, Operation, Outcome, Status
from bulkconn.report import format as fmt
from bulkconn.report.reader import read_state, summarize
from bulkconn.report.writer import ReportWriter
from bulkconn.shards import Partition, ShardSpec, header_fields, partition

SHA = "d" * 64
COUNTS = {"contoso": 3, "fabrikam": 2, "northwind": 2}


def plan_for(count: int = 2, sha: str = SHA) -> Partition:
    return partition(COUNTS, count, job_sha256=sha)


def outcome(key: str, tenant: str, status: Status = Status.SUCCEEDED, action: str = "update") -> Outcome:
    return Outcome(key, int(key), tenant, f"conn-{key}", action, status, http_status=204, attempts=1)


class Shard:
    """Writes one shard's report the way a run does: header (with the shard), lines, summary."""

    def __init__(self, directory: Path, index: int, plan: Partition, *, sha: str = SHA) -> None:
        self.spec = ShardSpec(index, plan.count)
        self.plan, self.sha = plan, sha
        self.path = directory / f"job.shard-{index}-of-{plan.count}.report.jsonl"

    def run(
        self,
        outcomes: list[Outcome],
        *,
        intents: tuple[Operation, ...] = (),
        finish: bool = True,
        interrupted: bool = False,
    ) -> Shard:
        head = fmt.header(
            run_id=f"run-{self.spec.index}",
            job="/job/job.jsonl",
            job_sha256=self.sha,
            job_bytes=100,
            job_lines=7,
            bulkconn_version="0.1.0",
            started_at="2026-11-28T10:00:00.000Z",
            resumed=self.path.exists() and self.path.stat().st_size > 0,
            tenants=sorted(COUNTS),
            settings={"batch_size": 20},
        )
        with ReportWriter(self.path) as writer:
            writer.write(cast(fmt.Record, {**head, **header_fields(self.spec, self.plan)}))
            for op in intents:
                writer.intent(op)
            for item in outcomes:
                writer.result(item)
            if finish:
                writer.write(
                    fmt.summary(
                        counts={},
                        interrupted=interrupted,
                        skipped_from_earlier_runs=0,
                        auth_failures={},
                        duration_s=2.5,
                        finished_at=f"2026-11-28T10:0{self.spec.index}:00.000Z",
                    )
                )
        return self


def ops_of(plan: Partition, index: int) -> list[tuple[str, str]]:
    """(key, tenant) pairs for the tenants of one shard: keys 1..7 spread over the tenants by name."""
    keys = {"contoso": ["1", "2", "3"], "fabrikam": ["4", "5"], "northwind": ["6", "7"]}
    return [(k, t) for t in plan.tenants[index] for k in keys[t]]


def complete_set(tmp_path: Path, plan: Partition) -> list[Shard]:
    return [Shard(tmp_path, i, plan).run([outcome(k, t) for k, t in ops_of(plan, i)]) for i in range(plan.count)]


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in path.read_bytes().splitlines()]


def test_merge_writes_one_header_one_line_per_operation_and_one_summary(tmp_path: Path) -> None:
    """A finished set of shards merges into a report that the usual readers understand."""
    plan = plan_for()
    shards = complete_set(tmp_path, plan)
    out = tmp_path / "job.report.jsonl"
    result = merge_reports([s.path for s in reversed(shards)], out, run_id="merged", now="2026-11-28T11:00:00.000Z")
    lines = lines_of(out)
    assert [line["type"] for line in lines] == ["header"] + ["result"] * 7 + ["summary"]
    header = lines[0]
    assert header["job_sha256"] == SHA and header["run_id"] == "merged" and "shard" not in header
    assert header["merged"]["shards"] == 2 and header["merged"]["partition"] == plan.fingerprint
    assert sorted(line["key"] for line in lines[1:-1]) == [str(k) for k in range(1, 8)]
    assert lines[-1]["counts"] == {"succeeded": 7} and lines[-1]["interrupted"] is False
    assert lines[-1]["finished_at"] == "2026-11-28T10:01:00.000Z"
    assert (result.operations, result.shards, result.unfinished) == (7, 2, ())
    assert summarize(out)["by_status"] == {"succeeded": 7}
    assert read_state(out).counts() == {"succeeded": 7}
    assert list(tmp_path.glob(".*.tmp")) == []


def test_merge_keeps_only_the_latest_result_of_a_resumed_shard(tmp_path: Path) -> None:
    """A shard that failed an operation, crashed mid-sync and was resumed contributes its final states only."""
    plan = plan_for()
    (key, tenant), *rest = ops_of(plan, 0)
    shard0 = Shard(tmp_path, 0, plan)
    sync = Operation("99", 99, tenant, "exchangeConnector", "conn-99", Action.SYNC, sync_type="deltaSync")
    shard0.run([outcome(key, tenant, Status.FAILED)], intents=(sync,), finish=False)  # killed: no summary
    with shard0.path.open("ab") as handle:
        handle.write(b'{"type": "result", "key": "2", "sta')  # torn by the kill
    shard0.run(
        [outcome(key, tenant), outcome("99", tenant, Status.UNCERTAIN, "sync")] + [outcome(k, t) for k, t in rest]
    )
    shard1 = Shard(tmp_path, 1, plan).run([outcome(k, t) for k, t in ops_of(plan, 1)])
    out = tmp_path / "merged.jsonl"
    result = merge_reports([shard0.path, shard1.path], out)
    finals = [(line["key"], line["status"]) for line in lines_of(out) if line["type"] in ("result", "intent")]
    assert len(finals) == len(dict(finals)) == 8  # exactly one line per operation
    assert dict(finals)[key] == "succeeded" and dict(finals)["99"] == "uncertain"
    assert result.torn_lines == 1 and result.counts == {"succeeded": 7, "uncertain": 1}
    assert lines_of(out)[0]["merged"]["reports"][0]["runs"] == 2


def test_missing_shards_are_named_with_their_default_report_names(tmp_path: Path) -> None:
    """Merging 2 of 3 shards refuses and says which shard is missing."""
    plan = plan_for(3)
    shards = complete_set(tmp_path, plan)
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError, match=r"missing shard\(s\) 1 of 3 \(default names: job.shard-1-of-3.report.jsonl\)"):
        merge_reports([shards[0].path, shards[2].path], out)
    assert not out.exists()


def test_a_shard_given_twice_is_refused(tmp_path: Path) -> None:
    """The same shard twice (and another missing) is named, not silently deduplicated."""
    plan = plan_for()
    shards = complete_set(tmp_path, plan)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(shards[0].path.read_bytes())
    with pytest.raises(UsageError, match=r"shard 0/2 is given 2 times: .*copy.jsonl") as caught:
        merge_reports([shards[0].path, copy], tmp_path / "out.jsonl")
    assert "missing shard(s) 1 of 2" in str(caught.value)


@pytest.mark.parametrize(
    ("other_count", "other_sha", "message"),
    [
        (2, "e" * 64, "is a report of another job"),
        (3, SHA, "is shard 1/3 but .* is 0/2"),
    ],
)
def test_reports_of_another_job_or_n_are_refused(
    tmp_path: Path, other_count: int, other_sha: str, message: str
) -> None:
    """Shards of another job file, or of the same job cut into another N, never merge."""
    plan = plan_for()
    first = Shard(tmp_path, 0, plan).run([outcome(k, t) for k, t in ops_of(plan, 0)])
    other_plan = plan_for(other_count, other_sha)
    (tmp_path / "x").mkdir()
    second = Shard(tmp_path / "x", 1, other_plan, sha=other_sha).run([outcome(k, t) for k, t in ops_of(other_plan, 1)])
    with pytest.raises(UsageError, match=message):
        merge_reports([first.path, second.path], tmp_path / "out.jsonl")


def test_reports_of_another_partition_are_refused(tmp_path: Path) -> None:
    """Same job and N but another partition (the tenants changed between shards) is refused."""
    plan = plan_for()
    changed = partition({**COUNTS, "woodgrove": 9}, 2, job_sha256=SHA)
    first = Shard(tmp_path, 0, plan).run([])
    second = Shard(tmp_path, 1, changed).run([])
    with pytest.raises(UsageError, match="different partitions"):
        merge_reports([first.path, second.path], tmp_path / "out.jsonl")


def test_an_operation_or_tenant_in_two_shards_is_refused(tmp_path: Path) -> None:
    """Two shards reporting one key (or one tenant) means two processes wrote it: never merge that."""
    plan = plan_for()
    stray_key, stray_tenant = ops_of(plan, 0)[0]
    first = Shard(tmp_path, 0, plan).run([outcome(k, t) for k, t in ops_of(plan, 0)])
    second = Shard(tmp_path, 1, plan).run([outcome(stray_key, stray_tenant)])
    with pytest.raises(UsageError, match=f"'{stray_key}' \\(shards 0 and 1\\)") as caught:
        merge_reports([first.path, second.path], tmp_path / "out.jsonl")
    assert f"tenant '{stray_tenant}' has results in shards 0 and 1" in str(caught.value)


def test_an_unfinished_shard_is_refused_unless_partial(tmp_path: Path) -> None:
    """A shard killed mid-run (no summary) or interrupted blocks the merge; --partial merges and says so."""
    plan = plan_for()
    (key, tenant), *_ = ops_of(plan, 0)
    sync = Operation(key, int(key), tenant, "exchangeConnector", f"conn-{key}", Action.SYNC, sync_type="deltaSync")
    first = Shard(tmp_path, 0, plan).run([], intents=(sync,), finish=False)
    second = Shard(tmp_path, 1, plan).run([outcome(k, t) for k, t in ops_of(plan, 1)], interrupted=True)
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError, match=r"shard 0 .* has no summary") as caught:
        merge_reports([first.path, second.path], out)
    assert "shard 1" in str(caught.value) and "was interrupted" in str(caught.value)
    result = merge_reports([first.path, second.path], out, partial=True)
    assert result.unfinished == (0, 1)
    lines = lines_of(out)
    assert lines[1]["type"] == "intent" and lines[-1]["interrupted"] is True
    assert read_state(out).uncertain_intents() == [(key, tenant, f"conn-{key}", int(key))]


def test_refusals_leave_an_existing_output_untouched(tmp_path: Path) -> None:
    """A refused merge writes nothing; the output may not be one of the inputs."""
    plan = plan_for()
    shards = complete_set(tmp_path, plan)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    with pytest.raises(UsageError, match="missing shard"):
        merge_reports([shards[0].path], out)
    assert out.read_bytes() == b"previous\n"
    with pytest.raises(UsageError, match="must not replace one of the shard reports"):
        merge_reports([s.path for s in shards], shards[0].path)


def test_an_unsharded_or_missing_report_is_refused_clearly(tmp_path: Path) -> None:
    """A report written without --shard, or a path that is not there, gets one plain message."""
    plain = tmp_path / "plain.jsonl"
    with ReportWriter(plain) as writer:
        writer.write(
            fmt.header(
                run_id="r",
                job="j",
                job_sha256=SHA,
                job_bytes=1,
                job_lines=1,
                bulkconn_version="0.1.0",
                started_at="2026-11-28T10:00:00.000Z",
                resumed=False,
                tenants=["contoso"],
                settings={},
            )
        )
    with pytest.raises(UsageError, match="not a shard report"):
        merge_reports([plain], tmp_path / "out.jsonl")
    with pytest.raises(UsageError, match="cannot read the report"):
        merge_reports([tmp_path / "nope.jsonl"], tmp_path / "out.jsonl")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX mode bits")
def test_the_merged_report_is_owner_only_like_every_report(tmp_path: Path) -> None:
    """A merged report names tenants and objects as a run's report does: mode 0600."""
    out = tmp_path / "all.jsonl"
    merge_reports([s.path for s in complete_set(tmp_path, plan_for(2))], out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
