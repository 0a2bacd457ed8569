"""The report contract: records round-trip, their fields are the documented ones, and old reports still resume."""

from __future__ import annotations

import asyncio
import errno
import io
from pathlib import Path

import orjson
import pytest

from bulkconn.fingerprint import fingerprint
from bulkconn.model import Action, ErrorInfo, Operation, Outcome, Status
from bulkconn.report import format as fmt
from bulkconn.report.reader import read_state, summarize
from bulkconn.report.writer import MAX_PENDING, ReportWriter
from bulkconn.resume import plan_resume

RESULT_FIELDS = [
    "type", "key", "line", "tenant", "id", "action", "status", "http_status", "attempts", "throttled", "error",
    "request_id", "client_request_id", "duration_ms", "finished_at",
]  # fmt: skip


def _outcome() -> Outcome:
    return Outcome(
        key="7",
        line=7,
        tenant="contoso",
        object_id="abc",
        action="update",
        status=Status.FAILED,
        http_status=404,
        attempts=2,
        throttled=1,
        error=ErrorInfo("ResourceNotFound", "no such connector"),
        request_id="r-1",
        client_request_id="c-1",
        duration_ms=12,
        finished_at="2026-01-01T00:00:00.000Z",
    )


def test_result_record_round_trips_with_the_documented_fields_in_order() -> None:
    """A result line holds exactly the fields docs/report-format.md lists, and reads back to the same outcome."""
    record = fmt.result(_outcome())
    assert list(record) == RESULT_FIELDS
    decoded = fmt.decode(fmt.encode(record))
    assert decoded == record
    assert fmt.outcome_of(record) == _outcome()
    assert fmt.decode(b'{"type": "res') is None and fmt.decode(b"[1]") is None


@pytest.mark.parametrize(
    "outcome",
    [
        _outcome(),
        Outcome("1", 1, "contoso", "abc", "update", Status.SUCCEEDED, 204, 1, 0, None, "r", "c", 5, "2026-01-01Z"),
        Outcome("k", 2, "t", "", Action.SYNC, Status.UNCERTAIN, None, error=ErrorInfo("UncertainSync", "may have")),
        Outcome("3", 3, "t", "i", "update", Status.SKIPPED, 200, reason=ErrorInfo("Unchanged", "already so")),
        Outcome('\u00e9\n"\\\x01\u2028😀', 2**40, "t", "i", "wipe", Status.FAILED, 500, 3, 2, ErrorInfo("c", "\t")),
    ],
)
def test_the_writers_result_lines_are_the_records_bytes(outcome: Outcome) -> None:
    """The result lines the writer encodes together are byte for byte what encoding the record gives: the same
    fields in the same order, ``reason`` only when set, the same escaping."""
    line = fmt.result_line(outcome)
    assert fmt.encode_lines([line, line]) == fmt.encode(fmt.result(outcome)) * 2


def test_writer_appends_after_a_torn_line_and_closes_as_a_context_manager(tmp_path: Path) -> None:
    """A crash left half a line: the writer ends it first, so the next record is a line of its own."""
    path = tmp_path / "report.jsonl"
    path.write_bytes(b'{"type": "header", "format": 1}\n{"type": "resu')
    op = Operation("1", 1, "contoso", "exchangeConnector", "abc", Action.SYNC, sync_type="fullSync")
    with ReportWriter(path) as writer:
        writer.intent(op)
    lines = path.read_bytes().splitlines()
    assert fmt.decode(lines[1]) is None
    intent = fmt.decode(lines[2])
    assert intent is not None and intent["type"] == "intent" and intent["key"] == "1" and intent["action"] == "sync"


def _keys(path: Path) -> list[str]:
    return [str(orjson.loads(line)["key"]) for line in path.read_bytes().splitlines()]


def test_writer_flushes_a_steps_results_before_the_run_waits_and_at_once_outside_a_loop(tmp_path: Path) -> None:
    """In a loop, a step's lines reach the file together once the step ends; outside a loop, each one at once."""
    path = tmp_path / "report.jsonl"
    outcome = _outcome()

    async def scenario(writer: ReportWriter) -> list[str]:
        for key in ("1", "2", "3"):
            outcome.key = key
            writer.result(outcome)
        await asyncio.sleep(0)  # the step ended: the loop ran the flush before anything that waits
        return _keys(path)

    with ReportWriter(path) as writer:
        assert asyncio.run(scenario(writer)) == ["1", "2", "3"]
        outcome.key = "4"
        writer.result(outcome)
        assert _keys(path) == ["1", "2", "3", "4"]


def test_an_intent_is_durable_after_the_lines_before_it_and_close_writes_what_is_pending(tmp_path: Path) -> None:
    """An intent flushes the step's pending results first (file order is write order); closing loses nothing."""
    path = tmp_path / "report.jsonl"
    outcome = _outcome()
    sync = Operation("s", 9, "contoso", "exchangeConnector", "abc", Action.SYNC, sync_type="fullSync")

    async def scenario() -> list[str]:
        with ReportWriter(path) as writer:
            writer.result(outcome)
            writer.intent(sync)
            assert _keys(path) == ["7", "s"]  # in the file before the action is sent, without a turn of the loop
            outcome.key = "8"
            writer.result(outcome)
        return _keys(path)

    assert asyncio.run(scenario()) == ["7", "s", "8"]


def test_many_lines_in_one_step_reach_the_file_without_waiting_for_the_step_to_end(tmp_path: Path) -> None:
    """A step that records many lines (a job's invalid lines) holds at most MAX_PENDING of them in memory."""
    path = tmp_path / "report.jsonl"
    outcome = _outcome()
    lines = MAX_PENDING * 3 + 5

    async def scenario(writer: ReportWriter) -> int:
        for key in range(lines):
            outcome.key = str(key)
            writer.result(outcome)
        return len(_keys(path))  # still inside the step: only what the bound flushed is there

    with ReportWriter(path) as writer:
        in_file = asyncio.run(scenario(writer))
    assert lines - MAX_PENDING < in_file < lines
    assert _keys(path) == [str(key) for key in range(lines)]


class _FullDisk(io.RawIOBase):
    """A file on a full disk, on every platform: every write fails with ENOSPC (what /dev/full does on Linux)."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_flush_in_the_loop_stops_the_next_write_instead_of_vanishing(tmp_path: Path) -> None:
    """A full disk met by a step's flush is raised by the next write: the run stops rather than sending on."""

    async def scenario(writer: ReportWriter) -> None:
        writer.result(_outcome())
        await asyncio.sleep(0)  # the scheduled flush meets ENOSPC
        with pytest.raises(OSError):
            writer.result(_outcome())
        with pytest.raises(OSError):
            writer.durable([])

    writer = ReportWriter(tmp_path / "report.jsonl")
    writer._handle.close()
    writer._handle = io.BufferedWriter(_FullDisk())  # the disk fills up once the report is open
    asyncio.run(scenario(writer))
    with pytest.raises(OSError):
        writer.close()


def test_a_report_written_before_the_refactor_still_resumes(tmp_path: Path) -> None:
    """Format 1 as bulkconn 0.x wrote it: finished keys are skipped, a sync in flight is settled as uncertain."""
    job = tmp_path / "job.jsonl"
    job.write_text(
        '{"tenant": "contoso", "id": "a", "patch": {"serverName": "x.example"}}\n'
        '{"tenant": "contoso", "id": "b", "patch": {"serverName": "y.example"}}\n'
        '{"tenant": "contoso", "id": "c", "action": "sync", "syncType": "fullSync"}\n'
    )
    print_ = fingerprint(job)
    header = {
        "type": "header", "format": 1, "run_id": "r", "job": str(job), "job_sha256": print_.sha256,
        "job_bytes": print_.size, "job_lines": print_.lines, "bulkconn_version": "0.3.0",
        "started_at": "2026-01-01T00:00:00.000Z", "resumed": False, "tenants": ["contoso"], "settings": {},
    }  # fmt: skip
    result = fmt.result(_outcome()) | {"key": "1", "line": 1, "id": "a", "status": "succeeded", "error": None}
    failed = fmt.result(_outcome()) | {"key": "2", "line": 2, "id": "b"}
    intent = {"type": "intent", "key": "3", "line": 3, "tenant": "contoso", "id": "c", "action": "sync", "at": "t"}
    report = tmp_path / "job.report.jsonl"
    report.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (header, result, failed, intent)) + b'{"typ')

    state = read_state(report)
    assert (state.runs, state.torn_lines) == (1, 1)
    assert state.counts() == {"succeeded": 1, "failed": 1, "uncertain": 1}
    plan = plan_resume(job, report, retry_failed=True, recheck_invalid=False, resend_uncertain=False, force=False)
    assert plan.skip_keys == frozenset({"1", "3"})
    (settled,) = plan.prefill
    assert (settled.key, settled.status, settled.action) == ("3", Status.UNCERTAIN, "sync")
    assert settled.error is not None and settled.error.code == "UncertainSync"
    assert summarize(report)["by_status"] == {"succeeded": 1, "failed": 1, "uncertain": 1}  # the intent counts
