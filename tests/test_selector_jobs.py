"""Selector lines in a job: the scan, the lane reader's expansion, listing with pages, and the read-only commands'
option handling. Fake transport, virtual time: milliseconds each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from bulkconn.cli.common import EXIT_CHANGES_PENDING, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from bulkconn.expansion import Match, RecordedExpansion
from bulkconn.jobline import Invalid
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.listing import expand
from bulkconn.model import Action, ErrorInfo, Outcome, Status
from bulkconn.plan import EXIT_NOTHING_TO_CHANGE, PlanCounts, PlanEntry, PlanState
from bulkconn.reads import ReadFailed, Reads
from bulkconn.report import format as fmt
from bulkconn.transport import HttpRequest, HttpResponse
from tests.engine_harness import FakeAuth, config, oid
from tests.fakes import FakeGraph, FakeTransport, respond, run_virtual

TENANTS = ["contoso", "fabrikam"]


def _job(tmp_path: Path, lines: list[dict[str, Any]]) -> Path:
    path = tmp_path / "job.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def _scan(tmp_path: Path, lines: list[dict[str, Any]], **kwargs: Any) -> tuple[JobScan, list[Invalid]]:
    invalid: list[Invalid] = []
    return scan_job(_job(tmp_path, lines), TENANTS, on_invalid=invalid.append, **kwargs), invalid


ALL_CONTOSO = {"tenant": "contoso", "select": "all", "patch": {"exchangeAlias": "a"}, "key": "all"}


def test_a_selector_line_is_kept_and_placed_in_every_tenant_it_selects_in(tmp_path: Path) -> None:
    """A '*' selector's line goes to every tenant's lane in its place among the id lines."""
    lines = [
        {"tenant": "contoso", "id": oid(1), "patch": {"version": "1"}},
        {"tenant": "*", "where": {"status": "connected"}, "patch": {"version": "2"}},
        {"tenant": "fabrikam", "id": oid(2), "patch": {"version": "3"}},
    ]
    scan, invalid = _scan(tmp_path, lines)
    assert not invalid and scan.valid == 3 and list(scan.selectors) == [2]
    assert list(scan.line_numbers["contoso"]) == [1, 2] and list(scan.line_numbers["fabrikam"]) == [2, 3]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"tenant": "*", "where": {"serverNme": "x"}, "patch": {"version": "1"}}, "did you mean 'serverName'"),
        ({"tenant": "*", "id": oid(1), "where": {"version": "1"}, "patch": {"version": "1"}}, "names no 'id'"),
        (
            {"tenant": "*", "select": "all", "resource": "deviceCategory", "patch": {"displayName": "x"}},
            "deviceCategories",
        ),
        ({"key": "all", "tenant": "fabrikam", "select": "all", "patch": {"version": "1"}}, "duplicate key 'all'"),
    ],
)
def test_an_invalid_selector_line_is_an_invalid_result_naming_the_line(
    tmp_path: Path, line: dict[str, Any], words: str
) -> None:
    """A bad selector line is reported like any invalid line ('line N: ...') and sends nothing."""
    scan, invalid = _scan(tmp_path, [ALL_CONTOSO, line])
    (problem,) = invalid
    assert problem.line == 2 and problem.message.startswith("line 2: ") and words in problem.message
    assert list(scan.selectors) == [1]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"tenant": "contoso", "id": oid(1), "patch": {"version": "1"}, "expect": {"versio": "2"}}, "did you mean"),
        ({"tenant": "contoso", "id": oid(1), "patch": {"version": "1"}, "expect": "2"}, "'expect' must be"),
        ({"tenant": "contoso", "id": oid(1), "action": "sync", "syncType": "fullSync", "expect": {}}, "no 'expect'"),
    ],
)
def test_expect_is_validated_like_a_patch(tmp_path: Path, line: dict[str, Any], words: str) -> None:
    """An undo line's expect must be an object of documented properties, and only on an update."""
    _, invalid = _scan(tmp_path, [line])
    assert len(invalid) == 1 and words in invalid[0].message


def test_the_lane_reader_yields_recorded_matches_in_place_and_skips_final_keys(tmp_path: Path) -> None:
    """Id line, selector (3 matches, one already final), id line: the lane reads them in that order."""
    lines = [{"tenant": "contoso", "id": oid(1), "patch": {"version": "1"}}, ALL_CONTOSO]
    lines.append({"tenant": "contoso", "id": oid(9), "patch": {"version": "9"}})
    scan, _ = _scan(tmp_path, lines)
    scan.expansion = {(2, "contoso"): tuple(Match(2, "contoso", f"all:contoso:{oid(n)}", oid(n)) for n in (5, 6, 7))}
    scan.skip_keys = {f"all:contoso:{oid(6)}"}
    assert scan.operations == 4
    reader = LaneReader(scan, "contoso")
    try:
        first, rest = reader.read(2), reader.read(10)
    finally:
        reader.close()
    ops = first + rest
    assert [(op.line, op.object_id) for op in ops] == [(1, oid(1)), (2, oid(5)), (2, oid(7)), (3, oid(9))]
    assert ops[1].key == f"all:contoso:{oid(5)}" and ops[1].patch == {"exchangeAlias": "a"}
    assert reader.remaining == 0


def _reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: FakeTransport) -> Reads:
    cfg = config(tmp_path, monkeypatch)
    return Reads(transport=transport, auth=FakeAuth(), tenants=cfg.tenants)


def test_expansion_lists_each_tenant_once_across_pages_and_records_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two selector lines, 12 objects in pages of 5: one listing (3 GETs) per tenant, exactly the matches recorded."""
    graph = FakeGraph(page_size=5)
    for n in range(1, 13):
        graph.objects[("contoso", oid(n))] = {"status": "connected" if n % 3 == 0 else "none"}
    lines = [ALL_CONTOSO, {"tenant": "contoso", "where": {"status": "connected"}, "patch": {"version": "2"}}]
    scan, _ = _scan(tmp_path, lines)
    recorded: list[Any] = []

    async def scenario() -> None:
        async with FakeTransport(graph) as transport:
            found = await expand(
                scan, _reads(tmp_path, monkeypatch, transport), recorded=RecordedExpansion(), on_records=recorded.extend
            )
            assert found.failures == [] and len(transport.requests) == 3

    run_virtual(scenario())
    assert [m.object_id for m in scan.expansion[(1, "contoso")]] == [oid(n) for n in range(1, 13)]
    assert [m.object_id for m in scan.expansion[(2, "contoso")]] == [oid(3), oid(6), oid(9), oid(12)]
    done = [r for r in recorded if r["type"] == "expansion_done"]
    assert [(d["line"], d["count"], d["listed"]) for d in done] == [(1, 12, 12), (2, 4, 12)]


def test_recorded_groups_are_not_listed_again_and_a_failed_listing_is_a_failed_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume uses the recorded group as is (no request); a tenant that refuses the listing fails its line."""
    lines = [{"tenant": "*", "select": "all", "patch": {"version": "1"}, "key": "v"}]
    scan, _ = _scan(tmp_path, lines)
    kept = (Match(1, "contoso", f"v:contoso:{oid(4)}", oid(4)),)
    recorded = RecordedExpansion(groups={(1, "contoso"): kept})

    def forbidden(request: HttpRequest) -> HttpResponse:
        return respond(403, body={"error": {"code": "Forbidden", "message": "no DeviceManagement permission"}})

    async def scenario() -> Any:
        async with FakeTransport(forbidden) as transport:
            found = await expand(
                scan,
                _reads(tmp_path, monkeypatch, transport),
                recorded=recorded,
                on_records=lambda r: pytest.fail("nothing to record"),
            )
            assert [r.url.split("/v1.0")[1] for r in transport.requests] == [
                "/deviceManagement/exchangeConnectors?$select=id"
            ]
            return found

    found = run_virtual(scenario())
    assert scan.expansion == {(1, "contoso"): kept}
    (failure,) = found.failures
    assert (failure.key, failure.tenant, failure.status, failure.object_id) == ("v:fabrikam", "fabrikam", "failed", "")
    assert failure.error is not None and "could not list" in failure.error.message


def test_a_next_link_to_another_host_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token never leaves the tenant's Graph root: a foreign @odata.nextLink stops the listing with an error."""
    page = {"value": [{"id": oid(1)}], "@odata.nextLink": "https://evil.example/v1.0/next"}

    async def scenario() -> tuple[ErrorInfo | None, int]:
        async with FakeTransport(lambda r: respond(200, body=page)) as transport:
            error = await _reads(tmp_path, monkeypatch, transport).list_pages("contoso", "/x", lambda p: None)
            return error, len(transport.requests)

    error, sent = run_virtual(scenario())
    assert error is not None and error.code == "NextLinkRefused" and sent == 1


def test_result_reason_round_trips_and_is_only_written_when_set() -> None:
    """The report's optional `reason` (additive to format 1) survives encode/decode."""
    outcome = Outcome(key="k", line=1, tenant="t", object_id="i", action="update", status=Status.SKIPPED)
    assert "reason" not in fmt.result(outcome)
    outcome.reason = ErrorInfo("Unchanged", "already has the patched value of serverName")
    assert fmt.outcome_of(fmt.result(outcome)) == outcome


def test_plan_exit_codes_are_the_cli_ones() -> None:
    """plan's 0/4/1 are the CLI's EXIT_OK, EXIT_CHANGES_PENDING and EXIT_FAILED."""
    counts = PlanCounts()
    assert counts.exit_code() == EXIT_NOTHING_TO_CHANGE == EXIT_OK
    counts.add(PlanEntry("k", 1, "t", "i", Action.UPDATE.value, PlanState.CHANGE))
    assert counts.exit_code() == EXIT_CHANGES_PENDING
    counts.add(PlanEntry("k", 2, "t", "i", Action.UPDATE.value, PlanState.MISSING))
    assert counts.exit_code() == EXIT_FAILED


def test_rollback_refuses_a_report_without_pre_images_and_writes_nothing(tmp_path: Path) -> None:
    """A report of a run without --backup: exit 2, a message saying why, no undo file."""
    header = {"type": "header", "format": 1, "run_id": "r"}
    result = {"type": "result", "key": "1", "status": "succeeded", "action": "update", "tenant": "t", "id": "i"}
    report = tmp_path / "r.jsonl"
    report.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(result) + b"\n")
    out = tmp_path / "undo.jsonl"
    done = CliRunner().invoke(cli, ["rollback", str(report), "-o", str(out)])
    assert done.exit_code == EXIT_USAGE and "holds no pre-images" in done.stderr and "--backup" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--where", "serverNme=x"], "did you mean 'serverName'"),
        (["--where", "status"], "expected PROPERTY=VALUE"),
        (["--where", "status=conected"], "did you mean 'connected'"),
        (["--tenant", "contosso"], "did you mean 'contoso'"),
    ],
)
def test_export_refuses_bad_options_before_reading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], words: str
) -> None:
    """export's --where and --tenant are validated like a selector line's: exit 2 with a hint, no file."""
    config(tmp_path, monkeypatch)
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[defaults]\nclient_id = "11111111-1111-1111-1111-111111111111"\nclient_secret_env = "BULKCONN_TEST_SECRET"\n'
        '[tenants.contoso]\ntenant_id = "00000000-0000-0000-0000-000000000001"\n'
    )
    out = tmp_path / "e.jsonl"
    done = CliRunner().invoke(cli, ["export", "--config", str(toml), *args, "-o", str(out)])
    assert done.exit_code == EXIT_USAGE and words in done.stderr, done.stderr
    assert not out.exists()


def test_reads_retry_a_throttled_batch_after_retry_after_and_report_a_missing_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads.objects: one $batch of GETs; a throttled envelope is read again after its Retry-After; 404 is final."""
    graph = FakeGraph()
    graph.objects[("contoso", oid(1))] = {"serverName": "a"}
    throttled = [True]

    def handler(request: HttpRequest) -> HttpResponse:
        if throttled.pop() if throttled else False:
            return respond(429, headers={"retry-after": "3"}, body={"error": {"code": "TooManyRequests"}})
        return graph(request)

    async def scenario() -> tuple[list[Any], list[float]]:
        async with FakeTransport(handler) as transport:
            reads = _reads(tmp_path, monkeypatch, transport)
            sent: list[float] = []
            original = transport.send

            async def timed(request: HttpRequest) -> HttpResponse:
                sent.append(asyncio.get_running_loop().time())
                return await original(request)

            transport.send = timed  # type: ignore[method-assign]
            return await reads.objects("contoso", [f"/x/{oid(1)}", f"/x/{oid(2)}"]), sent

    found, sent = run_virtual(scenario())
    assert found[0] == {"id": oid(1), "serverName": "a"}
    assert isinstance(found[1], ReadFailed) and found[1].status == 404
    assert len(sent) == 2 and sent[1] - sent[0] >= 3.0
