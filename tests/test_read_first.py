"""Read before write (--skip-unchanged, --backup, undo lines with expect) in the real engine, in virtual time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.engine import EngineSettings
from bulkconn.engine.reading import ReadFirst
from bulkconn.model import Status
from bulkconn.transport import HttpRequest, HttpResponse
from tests.engine_harness import POLICY, oid, run_engine, update
from tests.fakes import FakeGraph, error_body, respond


def _settings(**read_first: bool) -> EngineSettings:
    return EngineSettings(seed=1, policy=POLICY, read_first=ReadFirst(**read_first))


def _graph(servers: dict[int, str]) -> FakeGraph:
    graph = FakeGraph()
    for n, server in servers.items():
        graph.objects[("contoso", oid(n))] = {"serverName": server, "status": "connected"}
    return graph


def _patched(run_requests: list[tuple[float, HttpRequest]]) -> list[str]:
    """The object ids every write request carried, in order (sub-requests of a $batch included)."""
    ids: list[str] = []
    for _, request in run_requests:
        body = orjson.loads(request.body) if request.body else {}
        subs = body.get("requests", [{"method": request.method, "url": request.url}])
        ids += [str(s["url"]).split("/")[-1] for s in subs if s["method"] == "PATCH"]
    return ids


def test_skip_unchanged_sends_no_write_for_a_patch_already_satisfied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of 4 updates, the 2 whose object already has the value end skipped (Unchanged) and cost no write."""
    graph = _graph({1: "mail1.example.com", 2: "old", 3: "mail3.example.com", 4: "old"})
    lines = [update(n) for n in range(1, 5)]
    run = run_engine(tmp_path, monkeypatch, lines, graph, settings=_settings(skip_unchanged=True))
    by_line = run.by_line()
    assert [by_line[n].status for n in range(1, 5)] == ["skipped", "succeeded", "skipped", "succeeded"]
    reason = by_line[1].reason
    assert reason is not None and reason.code == "Unchanged" and "serverName" in reason.message
    assert by_line[2].reason is None
    assert graph.writes_total == 2 and sorted(_patched(run.requests)) == [oid(2), oid(4)]
    assert graph.reads_total == 4


def test_without_read_first_nothing_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain run sends the writes only: no GET, even for a patch the object already satisfies."""
    graph = _graph({1: "mail1.example.com"})
    run = run_engine(tmp_path, monkeypatch, [update(1)], graph)
    assert run.only().status == "succeeded" and graph.reads_total == 0 and graph.writes_total == 1


def test_backup_is_recorded_before_the_write_with_the_values_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--backup: each pre-image (exactly the patched properties, null when absent) is handed over before its PATCH."""
    graph = _graph({1: "old1", 2: "old2"})
    graph.objects[("contoso", oid(2))].pop("serverName")
    lines = [update(1), update(2, patch={"serverName": "new2", "exchangeAlias": "a"})]
    run = run_engine(tmp_path, monkeypatch, lines, graph, settings=_settings(backup=True))
    assert [o.status for o in run.outcomes] == ["succeeded", "succeeded"]
    befores = {b.object_id: (b.before, b.patch) for _, b in run.backups}
    assert befores[oid(1)] == ({"serverName": "old1"}, {"serverName": "mail1.example.com"})
    assert befores[oid(2)] == (
        {"serverName": None, "exchangeAlias": None},
        {"serverName": "new2", "exchangeAlias": "a"},
    )
    first_write = next(i for i, (_, r) in enumerate(run.requests) if r.method == "PATCH" or b"PATCH" in (r.body or b""))
    assert all(sent <= first_write for sent, _ in run.backups)


def test_undo_line_is_a_conflict_when_the_object_changed_since_and_force_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """expect differs from the object: skipped (Conflict), nothing written; --force writes it anyway."""
    undo = update(1, patch={"serverName": "before"}, expect={"serverName": "bulkconn-wrote"})
    graph = _graph({1: "someone-else"})
    run = run_engine(tmp_path, monkeypatch, [undo], graph)
    outcome = run.only()
    assert outcome.status == "skipped" and outcome.reason is not None and outcome.reason.code == "Conflict"
    assert "'serverName' is now \"someone-else\"" in outcome.reason.message and graph.writes_total == 0
    forced = _graph({1: "someone-else"})
    run = run_engine(tmp_path, monkeypatch, [undo], forced, settings=_settings(force=True))
    assert run.only().status == "succeeded" and forced.objects[("contoso", oid(1))]["serverName"] == "before"


def test_undo_line_whose_object_already_holds_the_pre_image_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An undo line whose object already has its pre-image (the write never landed) is skipped as Unchanged."""
    undo = update(1, patch={"serverName": "before"}, expect={"serverName": "bulkconn-wrote"})
    run = run_engine(tmp_path, monkeypatch, [undo], _graph({1: "before"}))
    reason = run.only().reason
    assert run.only().status == "skipped" and reason is not None and reason.code == "Unchanged"


def _scripted_reads(*statuses: int) -> tuple[FakeGraph, Any]:
    """A fake Graph whose first GETs answer ``statuses`` (then the object)."""
    graph = _graph({1: "old"})
    answers = list(statuses)

    def handler(request: HttpRequest) -> HttpResponse:
        if request.method == "GET" and answers:
            status = answers.pop(0)
            return respond(status, headers={"retry-after": "2"}, body=error_body(str(status)))
        return graph(request)

    return graph, handler


def test_a_throttled_read_is_retried_after_retry_after_then_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read answered 429 waits its Retry-After, reads again and writes; a retried write is not read again."""
    _, handler = _scripted_reads(429)
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=_settings(backup=True))
    outcome = run.only()
    assert outcome.status == "succeeded" and outcome.throttled == 1 and outcome.attempts == 1
    (t0, read1), (t1, read2), (_, write) = run.requests
    assert (read1.method, read2.method, write.method) == ("GET", "GET", "PATCH") and t1 - t0 >= 2.0
    assert len(run.backups) == 1


def test_an_object_that_cannot_be_read_fails_without_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 404 on the read fails the operation with the read's error; nothing is written."""
    graph = _graph({})
    run = run_engine(tmp_path, monkeypatch, [update(1)], graph, settings=_settings(skip_unchanged=True))
    outcome = run.only()
    assert outcome.status == Status.FAILED and outcome.http_status == 404
    assert outcome.error is not None and outcome.error.code == "ResourceNotFound" and graph.writes_total == 0


def test_the_read_selects_exactly_the_patched_and_expected_properties(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GET asks for id and the properties it compares or backs up, nothing more."""
    undo = update(1, patch={"serverName": "a", "exchangeAlias": "b"}, expect={"serverName": "c", "exchangeAlias": "d"})
    run = run_engine(tmp_path, monkeypatch, [undo], _graph({1: "c"}), settings=_settings(backup=True))
    read = run.requests[0][1]
    assert read.method == "GET" and read.url.endswith(f"/{oid(1)}?$select=id,exchangeAlias,serverName")
