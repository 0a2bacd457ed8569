"""Hostile Graph answers, client side, in virtual time over a fake transport: each is a clear per-operation result.

What is on the wire for each kind is the emulator's (docs/emulator.md, "Hostile answers"); here the engine gets
the same answers from a handler. Nothing crashes or hangs, a PATCH is retried until it lands, a sync whose
answer was lost ends ``uncertain`` and is never sent twice, and a redirect is never followed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bulkconn.emulator.hostile import NOT_JSON, PROXY_502
from bulkconn.engine import EngineSettings
from bulkconn.errors import TransportError
from bulkconn.transport import HttpRequest, HttpResponse
from tests.engine_harness import POLICY, run_engine, sync, update
from tests.fakes import FakeGraph, batch_ids, respond

SINGLE = EngineSettings(seed=1, policy=POLICY, batch_size=1)


def _first_then_graph(first: Callable[[HttpRequest], HttpResponse]) -> tuple[FakeGraph, Callable[..., Any]]:
    """A handler whose first request gets ``first(request)`` and every later one the fake Graph."""
    graph = FakeGraph()
    calls: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return first(request) if len(calls) == 1 else graph(request)

    return graph, handler


def test_html_502_from_a_proxy_is_retried_for_a_patch_and_named_for_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An nginx HTML 502: the PATCH is sent again and lands; the sync is uncertain, its error says "HTML page"."""
    page = HttpResponse(502, {"content-type": "text/html", "server": "nginx"}, PROXY_502)
    _, handler = _first_then_graph(lambda request: page)
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("succeeded", 2)
    graph, handler = _first_then_graph(lambda request: page)
    run = run_engine(tmp_path, monkeypatch, [sync(1)], handler, settings=SINGLE)
    outcome = run.only()
    assert (outcome.status, outcome.attempts, outcome.http_status) == ("uncertain", 1, 502)
    assert outcome.error is not None and "HTML page instead of a Graph answer (server: nginx)" in outcome.error.message
    assert "<html>" not in outcome.error.message  # the page itself is not copied into the report
    assert graph.syncs == {}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """A 3xx to another host: one request only (never to the new host), failed, not uncertain, says why."""
    evil = respond(status, headers={"location": "https://evil.invalid/v1.0/deviceManagement/x"})
    run = run_engine(tmp_path, monkeypatch, [update(1), sync(2)], lambda request: evil, settings=SINGLE)
    assert len(run.requests) == 2
    assert all("evil.invalid" not in request.url for _, request in run.requests)
    for outcome in run.outcomes:
        assert (outcome.status, outcome.attempts, outcome.http_status) == ("failed", 1, status)
        assert outcome.error is not None
        assert f"HTTP {status} redirect to evil.invalid, not followed" in outcome.error.message


def _damaged_batch(kind: str) -> Callable[[HttpRequest], HttpResponse]:
    """A 200 $batch answer, shuffled, with sub-response "1" broken as ``kind`` (ids as the emulator breaks them)."""

    def answer(request: HttpRequest) -> HttpResponse:
        items: list[dict[str, Any]] = [{"id": rid, "status": 204, "headers": {}} for rid in batch_ids(request)]
        if kind == "missing":
            items = items[1:]
        elif kind == "extra":
            items.append({"id": "99", "status": 204, "headers": {}})
        elif kind == "duplicate":
            items.append({"id": "1", "status": 500, "body": {"error": {"code": "InternalError", "message": "dup"}}})
        elif kind == "unknown":
            items[0]["id"] = "99"
        elif kind == "no-status":
            del items[0]["status"]
        elif kind == "status-text":
            items[0]["status"] = "204"
        random.Random(7).shuffle(items)  # matched by id, never by position
        return respond(200, body={"responses": items})

    return answer


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("missing", "BatchResponseMissing"),
        ("duplicate", "BatchResponseDuplicate"),
        ("unknown", "BatchResponseMissing"),
        ("no-status", "BatchResponseInvalid"),
        ("status-text", "BatchResponseInvalid"),
    ],
)
def test_broken_batch_ids_are_matched_by_id_and_only_the_broken_one_is_affected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, code: str
) -> None:
    """Sub-response of op 1 missing, doubled, renamed or without status: a sync there is uncertain; the rest succeed."""
    _, handler = _first_then_graph(_damaged_batch(kind))
    run = run_engine(tmp_path, monkeypatch, [sync(1), update(2), update(3), sync(4)], handler)
    lines = run.by_line()
    assert lines[1].status == "uncertain" and lines[1].attempts == 1
    assert lines[1].error is not None and lines[1].error.code == code
    if kind == "unknown":
        assert "ids that were not asked for: 99" in lines[1].error.message
    assert [(lines[n].status, lines[n].attempts) for n in (2, 3, 4)] == [("succeeded", 1)] * 3
    assert sorted(op.line for op in run.intents) == [1, 4]  # no second intent: the sync of line 1 was not resent


def test_an_extra_sub_response_for_an_id_nobody_asked_for_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One more sub-response (id 99): every operation still gets its own answer, once."""
    _, handler = _first_then_graph(_damaged_batch("extra"))
    run = run_engine(tmp_path, monkeypatch, [sync(1), update(2), update(3)], handler)
    assert [(o.status, o.attempts) for o in sorted(run.outcomes, key=lambda o: o.line)] == [("succeeded", 1)] * 3


@pytest.mark.parametrize(
    "body", [NOT_JSON, b'{"responses": [{"id": "1", "sta', b"[]", b'{"responses": {}}', b"\xff\xfe\x00garbage"]
)
def test_an_unreadable_batch_envelope_is_a_per_operation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    """A 200 envelope that is not JSON, cut off, or of the wrong shape: updates land on retry, syncs are uncertain."""
    _, handler = _first_then_graph(lambda request: HttpResponse(200, {"content-type": "application/json"}, body))
    run = run_engine(tmp_path, monkeypatch, [update(1), sync(2)], handler)
    lines = run.by_line()
    assert (lines[1].status, lines[1].attempts) == ("succeeded", 2)
    assert lines[2].status == "uncertain" and lines[2].error is not None
    assert lines[2].error.code == "BatchResponseInvalid"


@pytest.mark.parametrize(
    "lost",
    [
        TransportError("AnswerCutOff", "the answer from graph was cut off before its end"),
        TransportError("ResponseTooLarge", "the answer from graph is larger than 16 MiB; not read"),
        TransportError("Timeout", "no complete answer from graph in 60 s"),
        TransportError("ConnectionReset", "the connection to graph broke"),
    ],
)
def test_a_lost_answer_keeps_a_sync_at_most_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: TransportError
) -> None:
    """The request may have reached Graph but its answer was lost: the PATCH is resent, the sync is uncertain."""
    answers = iter([lost, lost])

    def handler(request: HttpRequest) -> HttpResponse:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        return FakeGraph()(request)

    run = run_engine(tmp_path, monkeypatch, [update(1), sync(2)], handler, settings=SINGLE)
    lines = run.by_line()
    assert (lines[1].status, lines[1].attempts) == ("succeeded", 2)
    assert (lines[2].status, lines[2].attempts) == ("uncertain", 1)
    assert lines[2].error is not None and lines[2].error.code == lost.code


def test_a_sync_that_never_left_is_sent_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection at all (refused, or the TLS handshake never finished): nothing happened, so a sync is retried."""
    graph = FakeGraph()
    calls: list[int] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(1)
        if len(calls) == 1:
            raise TransportError("ConnectionError", "cannot connect to graph: refused", sent=False)
        return graph(request)

    run = run_engine(tmp_path, monkeypatch, [sync(1)], handler, settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("succeeded", 2)
    assert sum(graph.syncs.values()) == 1


def test_an_untrusted_certificate_fails_the_tenant_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS verification failure is not retried: the tenant is quarantined with the reason; others carry on."""
    graph = FakeGraph()

    def handler(request: HttpRequest) -> HttpResponse:
        if request.token.startswith("contoso"):
            raise TransportError("TLSError", "the TLS certificate of graph is not trusted", sent=False)
        return graph(request)

    lines = [update(n) for n in range(1, 6)] + [update(n, "fabrikam") for n in range(6, 9)]
    run = run_engine(tmp_path, monkeypatch, lines, handler, settings=SINGLE)
    contoso = [o for o in run.outcomes if o.tenant == "contoso"]
    assert {o.status for o in contoso} == {"failed"} and len(contoso) == 5
    assert all(o.error is not None and "TLS" in o.error.message for o in contoso)
    assert sum(1 for _, r in run.requests if r.token.startswith("contoso")) <= 4  # the in-flight ones, no retries
    assert "contoso" in run.engine.auth_failures
    assert {o.status for o in run.outcomes if o.tenant == "fabrikam"} == {"succeeded"}


def test_a_second_token_expiry_later_in_an_operations_life_is_retried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401, then 429, then 401 again (a new token revoked): re-authenticated both times, then it lands."""
    graph = FakeGraph()
    seq = iter(
        [
            respond(401, body={"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
            respond(429, headers={"retry-after": "1"}),
            respond(401, body={"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
        ]
    )
    run = run_engine(tmp_path, monkeypatch, [update(1)], lambda r: next(seq, None) or graph(r), settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("succeeded", 4)
    assert len(run.auth.invalidated) == 2


def test_graph_error_bodies_are_still_read_as_graph_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real OData error keeps Graph's code and message (the foreign-body wording is only for foreign bodies)."""
    body = {"error": {"code": "BadRequest", "message": "Property 'x' does not exist"}}
    run = run_engine(tmp_path, monkeypatch, [update(1)], lambda r: respond(400, body=body), settings=SINGLE)
    assert run.only().error is not None
    assert (run.only().error.code, run.only().error.message) == ("BadRequest", "Property 'x' does not exist")  # type: ignore[union-attr]


def test_the_500_budget_counts_500s_not_every_earlier_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """503, an HTML 502, then a 500: still retried (one 500 of 3 allowed) and it lands; three 500s end it."""
    graph = FakeGraph()
    internal = respond(500, body={"error": {"code": "InternalError", "message": "boom"}})
    seq = iter([respond(503), HttpResponse(502, {"content-type": "text/html"}, PROXY_502), internal])
    run = run_engine(tmp_path, monkeypatch, [update(1)], lambda r: next(seq, None) or graph(r), settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("succeeded", 4)
    always = iter([respond(503), internal, internal, internal])
    run = run_engine(tmp_path, monkeypatch, [update(1)], lambda r: next(always, None) or graph(r), settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("failed", 4)
    assert run.only().error is not None and "gave up after 4 attempts" in run.only().error.message  # type: ignore[union-attr]
