"""A run's scan keeps the job's first operations for the lanes: bounded, in file order, exactly as read back."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn import runner
from bulkconn.engine import EngineSettings, lane
from bulkconn.errors import JobChanged
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.model import Operation
from bulkconn.runner import RunOptions, execute
from tests.conftest import read_report
from tests.engine_harness import POLICY, FakeAuth, config, update
from tests.fakes import FakeGraph, FakeTransport, run_virtual

TENANTS = ["contoso", "fabrikam", "litware"]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def _interleaved(count: int) -> list[dict[str, Any]]:
    """``count`` updates taking turns over the tenants, with an invalid line every 7th."""
    return [
        {"tenant": TENANTS[n % 3], "id": "not an id"} if n % 7 == 0 else update(n, TENANTS[n % 3])
        for n in range(1, count + 1)
    ]


def _scan(job: Path, keep: int) -> JobScan:
    return scan_job(job, TENANTS, on_invalid=lambda item: None, keep=keep)


def _everything(scan: JobScan, tenant: str, chunk: int) -> list[Operation]:
    reader = LaneReader(scan, tenant)
    ops: list[Operation] = []
    while reader.remaining:
        ops += reader.read(chunk)
    reader.close()
    return ops


@pytest.mark.parametrize("keep", [0, 1, 30, 10_000])
def test_the_scan_keeps_each_tenants_first_valid_operations_and_never_more_than_asked(
    tmp_path: Path, keep: int
) -> None:
    """Whatever the job's size, at most ``keep`` operations per tenant are held: its first valid ones, in order."""
    scan = _scan(_write(tmp_path / "job.jsonl", _interleaved(300)), keep)
    for tenant in TENANTS:
        valid = list(scan.line_numbers[tenant])
        assert [op.line for op in scan.kept.get(tenant, [])] == valid[:keep]
    assert sum(map(len, scan.kept.values())) <= keep * len(TENANTS)


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_lanes_get_the_same_operations_from_memory_as_from_the_file(tmp_path: Path, chunk: int) -> None:
    """Kept operations and those read back by offset are equal and in the same order, across the boundary."""
    job = _write(tmp_path / "job.jsonl", [{"defaults": {"patch": {"version": "2"}}}, *_interleaved(300)])
    read_back, kept = _scan(job, keep=0), _scan(job, keep=40)  # about 85 valid lines per tenant: some read back
    for tenant in TENANTS:
        assert _everything(kept, tenant, chunk) == _everything(read_back, tenant, chunk)


def test_a_selector_line_stops_keeping(tmp_path: Path) -> None:
    """Operations after a selector line are read back after its expansion, so none of them is kept."""
    selector = {"tenant": "contoso", "select": "all", "patch": {"exchangeAlias": "a"}, "key": "all"}
    scan = _scan(_write(tmp_path / "job.jsonl", [update(1), update(2), selector, update(4)]), keep=100)
    assert [op.line for op in scan.kept["contoso"]] == [1, 2]


def test_kept_operations_are_handed_out_once(tmp_path: Path) -> None:
    """A reader takes its tenant's kept operations from the scan and lets go of each as it hands it out."""
    scan = _scan(_write(tmp_path / "job.jsonl", [update(n) for n in range(1, 11)]), keep=100)
    reader = LaneReader(scan, "contoso")
    assert "contoso" not in scan.kept and reader.kept == 10
    assert [op.line for op in reader.read_kept(4)] == [1, 2, 3, 4]
    assert reader.kept == 6 and reader.remaining == 6


def test_a_job_edited_after_the_scan_stops_a_lane_even_with_operations_in_memory(tmp_path: Path) -> None:
    """The lane checks the file at each trip for operations, wherever they come from."""
    job = _write(tmp_path / "job.jsonl", [update(n) for n in range(1, 11)])
    reader = LaneReader(_scan(job, keep=100), "contoso")
    reader.read_kept(2)
    _write(job, [update(n) for n in range(1, 12)])
    with pytest.raises(JobChanged, match="the job changed while running"):
        reader.read_kept(2)


def test_a_run_keeps_each_lanes_first_read_ahead_and_reads_the_rest_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job longer than the read-ahead: each tenant's first chunk is kept, the rest read back; every line sent once."""
    monkeypatch.setattr(lane, "READ_AHEAD", 60)  # two configured tenants: 30 each
    job = _write(tmp_path / "job.jsonl", [update(n, "contoso" if n % 2 else "fabrikam") for n in range(1, 101)])
    kept: list[dict[str, int]] = []
    options = RunOptions(report=tmp_path / "report.jsonl", settings=EngineSettings(seed=1, policy=POLICY))

    async def scenario() -> None:
        async with FakeTransport(FakeGraph()) as transport:
            await execute(
                job,
                config(tmp_path, monkeypatch),
                options,
                auth=FakeAuth(),
                transport=transport,
                on_scanned=lambda scan: kept.append({t: len(ops) for t, ops in scan.kept.items()}),
                install_signals=False,
            )

    run_virtual(scenario())
    assert kept == [{"contoso": 30, "fabrikam": 30}]
    _, results, _ = read_report(tmp_path / "report.jsonl")
    assert sorted(int(r["key"]) for r in results) == list(range(1, 101))
    assert all(r["status"] == "succeeded" for r in results)


def test_a_run_scans_with_the_heap_frozen_and_gives_it_back_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan runs with what was alive before it frozen (no full collection walks every module meanwhile),
    and the run leaves nothing frozen behind."""
    frozen_during_scan: list[int] = []

    def scan(*args: Any, **kwargs: Any) -> JobScan:
        frozen_during_scan.append(gc.get_freeze_count())
        return scan_job(*args, **kwargs)

    monkeypatch.setattr(runner, "scan_job", scan)
    job = _write(tmp_path / "job.jsonl", [update(n) for n in range(1, 4)])
    options = RunOptions(report=tmp_path / "report.jsonl", settings=EngineSettings(seed=1, policy=POLICY))

    async def scenario() -> None:
        async with FakeTransport(FakeGraph()) as transport:
            cfg = config(tmp_path, monkeypatch)
            await execute(job, cfg, options, auth=FakeAuth(), transport=transport, install_signals=False)

    run_virtual(scenario())
    assert frozen_during_scan and frozen_during_scan[0] > 0
    assert gc.get_freeze_count() == 0
