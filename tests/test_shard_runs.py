"""One shard's run (``runner.execute`` with ``RunOptions.shard``), over a fake Graph in virtual time.

A shard sends only its own tenants' operations, records exactly the invalid lines it owns, says in its
report header which shard of which partition it is, and refuses to resume another shard's report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.config import Config
from bulkconn.engine import EngineSettings
from bulkconn.errors import ResumeError
from bulkconn.jobscan import scan_job
from bulkconn.report.reader import read_state
from bulkconn.runner import RunOptions, RunResult, execute, user_agent
from bulkconn.shardenv import process_share
from bulkconn.shards import ShardSpec, operation_counts, partition
from tests.conftest import read_report
from tests.engine_harness import POLICY, FakeAuth, config, sync, update
from tests.fakes import FakeGraph, FakeTransport, run_virtual

TENANTS: dict[str, dict[str, Any]] = {"northwind": {}, "adatum": {}}  # with contoso and fabrikam: four tenants


def job_lines() -> list[Any]:
    lines: list[Any] = []
    for number, tenant in enumerate(["contoso"] * 6 + ["fabrikam"] * 4 + ["northwind"] * 3 + ["adatum"] * 2):
        lines.append(update(number, tenant))
    lines.append(sync(90, "fabrikam"))
    lines.append({"tenant": "nobody", "id": "x1", "patch": {"serverName": "a"}})  # unknown tenant: shard 0
    lines.append(update(91, "northwind") | {"patch": {"noSuchProperty": 1}})  # invalid, owned by northwind's shard
    lines.append("not an object")  # no tenant at all: shard 0
    return lines


def write_job(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


class ShardRig:
    """A job of four tenants, a configuration for them, and one fake Graph shared by every shard's run."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = tmp_path
        self.config: Config = config(tmp_path, monkeypatch, TENANTS)
        self.job = write_job(tmp_path / "job.jsonl", job_lines())
        self.graph = FakeGraph()
        self.sent: list[tuple[str, str]] = []  # (shard, tenant) of every request

    def plan(self, count: int) -> Any:
        scan = scan_job(self.job, list(self.config.tenants), on_invalid=lambda item: None)
        return partition(operation_counts(scan), count, job_sha256=scan.sha256)

    def run(self, spec: ShardSpec | None, **options: Any) -> RunResult:
        name = "unsharded" if spec is None else f"{spec.index}-of-{spec.count}"
        options.setdefault("report", self.dir / f"{name}.report.jsonl")

        def handler(request: Any) -> Any:
            self.sent.append((name, request.token.rsplit("-", 1)[0]))
            return self.graph(request)

        async def scenario() -> RunResult:
            async with FakeTransport(handler) as transport:
                return await execute(
                    self.job,
                    self.config,
                    RunOptions(settings=EngineSettings(seed=1, policy=POLICY), shard=spec, **options),
                    auth=FakeAuth(),
                    transport=transport,
                    install_signals=False,
                )

        return run_virtual(scenario())


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ShardRig:
    return ShardRig(tmp_path, monkeypatch)


def test_shards_together_record_every_line_once_and_send_only_their_own_tenants(rig: ShardRig) -> None:
    """Two shards: each key in exactly one report, each tenant sent by one shard only, invalid lines by their owner."""
    plan = rig.plan(2)
    keys: Counter[str] = Counter()
    for index in range(2):
        spec = ShardSpec(index, 2)
        result = rig.run(spec)
        header, results, summary = read_report(rig.dir / f"{index}-of-2.report.jsonl")
        assert header["shard"] == {
            "index": index,
            "count": 2,
            "partition": plan.fingerprint,
            "tenants": len(plan.tenants[index]),
            "operations": plan.operations[index],
        }
        keys.update(r["key"] for r in results)
        mine = {r["tenant"] for r in results if r["status"] != "invalid"}
        assert mine == set(plan.tenants[index])
        invalid = {r["key"] for r in results if r["status"] == "invalid"}
        northwind_shard = plan.shard_of("northwind")
        expected = ({"17", "19"} if index == 0 else set()) | ({"18"} if index == northwind_shard else set())
        assert invalid == expected
        assert summary["counts"] == dict(result.counts)
    assert sorted(keys.values()) == [1] * 19  # 19 lines, each recorded once
    by_shard = {tenant: {shard for shard, t in rig.sent if t == tenant} for _, tenant in rig.sent}
    assert all(len(shards) == 1 for shards in by_shard.values())
    assert rig.graph.syncs == {("fabrikam", "00000000-0000-0000-0000-000000000090"): 1}


def test_more_shards_than_tenants_leaves_an_empty_shard_with_a_header_and_a_summary(rig: ShardRig) -> None:
    """Shard 4 of 5 (four tenants) sends nothing, and still writes a report that says so."""
    result = rig.run(ShardSpec(4, 5))
    header, results, summary = read_report(rig.dir / "4-of-5.report.jsonl")
    assert (header["shard"]["tenants"], header["shard"]["operations"]) == (0, 0)
    assert results == [] and summary["counts"] == {} and not rig.sent
    assert result.tenants == 0


@pytest.mark.parametrize(
    ("resumed_as", "message"),
    [
        (ShardSpec(1, 2), "belongs to shard 0/2, not 1/2"),
        (ShardSpec(0, 3), "belongs to shard 0/2, not 0/3"),
        (None, "resume it with --shard 0/2"),
    ],
)
def test_resume_of_another_shard_or_n_is_refused_before_anything_is_sent(
    rig: ShardRig, resumed_as: ShardSpec | None, message: str
) -> None:
    """A report of shard 0/2 resumed as another shard, another N or unsharded: refused, nothing sent or written."""
    report = rig.dir / "0-of-2.report.jsonl"
    rig.run(ShardSpec(0, 2), report=report)
    before, sent = report.read_bytes(), len(rig.sent)
    state = read_state(report)
    with pytest.raises(ResumeError, match=message):
        rig.run(resumed_as, report=report, resumed=True, resume_header=state.header, skip_keys=set(state.latest))
    assert report.read_bytes() == before and len(rig.sent) == sent


def test_an_unsharded_report_resumed_as_a_shard_is_refused(rig: ShardRig) -> None:
    """A shard must not adopt a report an unsharded run wrote: it would skip the other tenants' keys."""
    report = rig.dir / "unsharded.report.jsonl"
    rig.run(None, report=report)
    with pytest.raises(ResumeError, match="unsharded run"):
        rig.run(ShardSpec(0, 2), report=report, resumed=True, resume_header=read_state(report).header)


def test_a_resumed_shard_keeps_its_partition_and_sends_only_what_is_left(rig: ShardRig) -> None:
    """Resuming shard 1/2 with part of its work final: same partition (no refusal), only the rest is sent."""
    report = rig.dir / "1-of-2.report.jsonl"
    first = rig.run(ShardSpec(1, 2), report=report)
    state = read_state(report)
    done = sorted(state.latest)[:3]
    result = rig.run(ShardSpec(1, 2), report=report, resumed=True, resume_header=state.header, skip_keys=set(done))
    assert result.skipped_from_report == 3
    headers = [orjson.loads(line) for line in report.read_bytes().splitlines() if b'"header"' in line]
    assert headers[0]["shard"] == headers[1]["shard"]
    assert sum(result.counts.values()) == sum(first.counts.values()) - 3


def test_a_shard_names_itself_in_its_user_agent_and_paces_to_its_share_of_the_global_limit() -> None:
    """The User-Agent says shard K of N; each of N shards paces to 1/N of the job's share (0.9 by default)."""
    assert user_agent(ShardSpec(2, 4)).endswith(" shard/2-of-4")
    assert "shard" not in user_agent(None)
    assert process_share(ShardSpec(0, 4), None) == pytest.approx(0.225)
    assert process_share(ShardSpec(0, 2), 0.5) == pytest.approx(0.25)
    assert process_share(None, None) == 1.0 and process_share(None, 0.5) == 0.5
