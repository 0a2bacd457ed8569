"""The engine's answer sequences, lanes and fairness over a fake transport in virtual time (milliseconds each)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bulkconn.batching import request_for, unpack
from bulkconn.config import TenantConfig
from bulkconn.engine import Engine, EngineSettings
from bulkconn.engine.lane import OpState
from bulkconn.errors import TransportError
from bulkconn.limits import TenantLimits
from bulkconn.model import ErrorInfo, Operation, Outcome, Status
from bulkconn.pacing import Heard, Pacer, Pacing
from bulkconn.report import format as fmt
from bulkconn.retry import RetryPolicy
from bulkconn.transport import Clock, HttpRequest, HttpResponse
from tests.engine_harness import GRAPH, POLICY, FakeAuth, oid, run_engine, sync, update
from tests.fakes import FakeGraph, FakeTransport, Handler, batch_ids, batch_response, error_body, respond, run_virtual
from tests.pacing_sim import busiest

SINGLE = EngineSettings(seed=1, batch_size=1, policy=POLICY)


def answers(*responses: HttpResponse | TransportError) -> Iterator[HttpResponse | TransportError]:
    yield from responses
    while True:
        yield respond(200)


def script(*responses: HttpResponse | TransportError) -> Handler:
    """A handler answering each request with the next response (then 200 for ever)."""
    sequence = answers(*responses)

    def handler(request: HttpRequest) -> HttpResponse:
        answer = next(sequence)
        if isinstance(answer, TransportError):
            raise answer
        return answer

    return handler


def test_an_operations_outcome_carries_each_of_its_states_fields() -> None:
    """OpState.outcome fills Outcome's fields by position (once per operation): each lands in its own field."""
    op = Operation("key-1", 7, "contoso", "exchangeConnector", "obj-1", "wipe")
    state = OpState(op, attempts=3, throttled=2, started=10.0, last_status=503, request_id="r", client_request_id="c")
    error = ErrorInfo("Code", "message")
    outcome = state.outcome(Status.FAILED, error, now=10.25, finished_at="2026-01-01T00:00:00.000Z")
    assert outcome == Outcome(
        key="key-1",
        line=7,
        tenant="contoso",
        object_id="obj-1",
        action="wipe",
        status=Status.FAILED,
        http_status=503,
        attempts=3,
        throttled=2,
        error=error,
        request_id="r",
        client_request_id="c",
        duration_ms=250,
        finished_at="2026-01-01T00:00:00.000Z",
    )


def test_a_batchs_outcomes_arrive_in_its_order_and_are_tallied_as_each_would_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Successes are recorded together, but a failure between them keeps its place in the report, and the counters
    (per tenant and in all) are what one record per operation gives."""

    def handler(request: HttpRequest) -> HttpResponse:
        return batch_response(
            {rid: (400, {}, error_body("BadRequest")) if rid == "2" else (204, {}, None) for rid in batch_ids(request)}
        )

    run = run_engine(tmp_path, monkeypatch, [update(n) for n in range(1, 5)], handler)
    assert [(o.line, str(o.status)) for o in run.outcomes] == [
        (1, "succeeded"),
        (2, "failed"),
        (3, "succeeded"),
        (4, "succeeded"),
    ]
    progress = run.engine.progress
    assert progress.done == {"succeeded": 3, "failed": 1}
    assert progress.per_tenant == {"contoso": {"succeeded": 3, "failed": 1}}
    assert progress.finished == 4


def test_429_then_200_waits_retry_after_and_counts_the_throttle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 with Retry-After 3 is resent no sooner than 3 s later and succeeds; the report counts the throttle."""
    handler = script(respond(429, headers={"Retry-After": "3"}, body=error_body("TooManyRequests")))
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE)
    outcome = run.only()
    assert (outcome.status, outcome.http_status, outcome.attempts, outcome.throttled) == ("succeeded", 200, 2, 1)
    (t0, first), (t1, second) = run.requests
    assert (
        first.method == second.method == "PATCH"
        and first.url == f"{GRAPH}/deviceManagement/exchangeConnectors/{oid(1)}"
    )
    assert t1 - t0 >= 3.0
    assert run.engine.progress.throttled == 1 and run.engine.progress.retries == 1


def test_sub_429_in_a_200_envelope_resends_only_that_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a $batch answered 200, only the sub-request that got 429 is sent again, after its Retry-After."""
    calls: list[int] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(1)
        if len(calls) == 1:
            ids = batch_ids(request)
            return batch_response(
                {
                    rid: (429, {"Retry-After": "2"}, error_body("TooManyRequests")) if rid == "2" else (200, {}, None)
                    for rid in ids
                }
            )
        return respond(204)

    run = run_engine(tmp_path, monkeypatch, [update(1), update(2), update(3)], handler)
    (t0, envelope), (t1, resend) = run.requests
    assert envelope.url == f"{GRAPH}/$batch" and batch_ids(envelope) == ["1", "2", "3"]
    assert resend.method == "PATCH" and resend.url.endswith(oid(2)) and t1 - t0 >= 2.0
    lines = run.by_line()
    assert [lines[n].status for n in (1, 2, 3)] == ["succeeded"] * 3
    assert (lines[2].attempts, lines[2].throttled) == (2, 1)
    assert (lines[1].attempts, lines[1].throttled) == (1, 0)


def test_envelope_429_retries_every_operation_and_halves_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled envelope throttles each of its operations and the next envelopes carry half as many."""
    handler = script(respond(429, headers={"Retry-After": "1"}, body=error_body("TooManyRequests")))

    def answer(request: HttpRequest) -> HttpResponse:
        first = handler(request)
        if first.status != 200:
            return first
        return batch_response({rid: (200, {}, None) for rid in batch_ids(request)})

    run = run_engine(tmp_path, monkeypatch, [update(n) for n in range(1, 21)], answer)
    sizes = [len(batch_ids(r)) for _, r in run.requests]
    assert sizes[0] == 20 and max(sizes[1:]) <= 10 and sum(sizes[1:]) == 20
    assert all(o.status == "succeeded" and o.throttled == 1 and o.attempts == 2 for o in run.outcomes)


def test_401_then_200_gets_a_fresh_token_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused token is dropped and the operation resent at once with a new one; a second 401 fails it."""
    handler = script(respond(401, body=error_body("InvalidAuthenticationToken")))
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE)
    assert run.only().status == "succeeded" and run.only().attempts == 2
    assert run.auth.invalidated == [("contoso", "contoso-1")]
    assert [r.token for _, r in run.requests] == ["contoso-1", "contoso-2"]
    assert run.requests[1][0] == pytest.approx(run.requests[0][0], abs=1e-9)  # no wait

    always = script(*[respond(401, body=error_body("InvalidAuthenticationToken"))] * 5)
    again = run_engine(tmp_path, monkeypatch, [update(1)], always, settings=SINGLE)
    failed = again.only()
    assert (failed.status, failed.http_status, failed.attempts) == ("failed", 401, 2)
    assert failed.error is not None and failed.error.code == "InvalidAuthenticationToken"


def test_403_quarantines_the_tenant_and_spares_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 403 fails the operation, ends the tenant's other operations with the reason, and other tenants go on."""

    def handler(request: HttpRequest) -> HttpResponse:
        if request.token.startswith("contoso"):
            return respond(403, body=error_body("Forbidden", "Application is not authorized"))
        return respond(204)

    lines = [update(n) for n in range(1, 6)] + [update(n, tenant="fabrikam") for n in range(6, 9)]
    run = run_engine(tmp_path, monkeypatch, lines, handler, settings=SINGLE)
    by_line = run.by_line()
    assert len(run.outcomes) == 8
    contoso = [by_line[n] for n in range(1, 6)]
    assert all(o.status == "failed" for o in contoso)
    assert all(by_line[n].status == "succeeded" for n in range(6, 9))
    assert "permission missing for tenant 'contoso'" in str(run.engine.auth_failures["contoso"].message)
    assert sum(1 for _, r in run.requests if r.token.startswith("contoso")) < 5  # the rest was never sent
    assert any(o.error is not None and o.error.code == "Forbidden" and o.attempts == 1 for o in contoso)


def test_token_failure_quarantines_before_anything_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant whose credentials fail sends nothing; each of its operations fails with the reason."""
    run = run_engine(
        tmp_path,
        monkeypatch,
        [update(1), update(2, tenant="fabrikam")],
        lambda r: respond(204),
        auth=FakeAuth(failing=frozenset({"contoso"})),
        settings=SINGLE,
    )
    assert [r.token for _, r in run.requests] == ["fabrikam-1"]
    failed = run.by_line()[1]
    assert failed.status == "failed" and failed.error is not None
    assert "authentication failed for tenant 'contoso'" in failed.error.message


def test_503_without_retry_after_backs_off_over_a_fresh_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 without Retry-After is retried after a jittered backoff, over a new connection, and succeeds."""
    handler = script(respond(503, body=error_body("ServiceUnavailable")))
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE)
    (t0, first), (t1, second) = run.requests
    assert not first.fresh_connection and second.fresh_connection
    assert 0 <= t1 - t0 <= POLICY.backoff_base_s
    outcome = run.only()
    assert (outcome.status, outcome.attempts, outcome.throttled) == ("succeeded", 2, 0)


def test_garbled_batch_answer_is_retried_for_updates_and_uncertain_for_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable 200 envelope: updates are sent again; a sync may have happened, so it ends uncertain."""
    calls: list[int] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(1)
        if len(calls) == 1:
            return HttpResponse(200, {}, b"{not json")
        if request.url.endswith("$batch"):
            return batch_response({rid: (200, {}, None) for rid in batch_ids(request)})
        return respond(204)

    run = run_engine(tmp_path, monkeypatch, [update(1), update(2), sync(3)], handler)
    lines = run.by_line()
    assert lines[1].status == lines[2].status == "succeeded" and lines[1].attempts == 2
    assert lines[3].status == "uncertain" and lines[3].attempts == 1
    assert lines[3].error is not None and lines[3].error.code == "BatchResponseInvalid"
    assert [op.line for op in run.intents] == [3]


def test_sync_with_no_answer_is_uncertain_and_not_resent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync whose request got no answer may have happened: it is recorded as intended, ends uncertain, one send."""
    handler = script(TransportError("ConnectionReset", "the connection to graph broke"))
    run = run_engine(tmp_path, monkeypatch, [sync(1)], handler, settings=SINGLE)
    outcome = run.only()
    assert (outcome.status, outcome.http_status, outcome.attempts) == ("uncertain", None, 1)
    assert outcome.error is not None and outcome.error.code == "ConnectionReset"
    assert len(run.requests) == 1 and [op.line for op in run.intents] == [1]
    body = orjson.loads(run.requests[0][1].body or b"{}")
    assert run.requests[0][1].url.endswith(f"{oid(1)}/syncNow") or body == {"syncType": "deltaSync"}


def test_update_with_no_answer_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update is idempotent: after a connection failure it is sent again and succeeds."""
    handler = script(TransportError("Timeout", "no answer"), TransportError("ConnectionReset", "broke"))
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE)
    assert (run.only().status, run.only().attempts) == ("succeeded", 3)


def test_attempts_run_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer that stays 503 is sent max_attempts times, then fails saying so."""
    settings = EngineSettings(seed=1, batch_size=1, policy=RetryPolicy(max_attempts=3, backoff_base_s=1))
    run = run_engine(tmp_path, monkeypatch, [update(1)], lambda r: respond(503), settings=settings)
    outcome = run.only()
    assert (outcome.status, outcome.attempts, len(run.requests)) == ("failed", 3, 3)
    assert outcome.error is not None and "gave up after 3 attempts" in outcome.error.message


def test_operations_on_one_object_never_fly_together_and_keep_job_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two lines for the same object go in separate requests, in job order; other objects are not held back."""
    lines = [update(1), update(2), update(1, patch={"serverName": "second.example.com"}), update(3)]

    def handler(request: HttpRequest) -> HttpResponse:
        if request.url.endswith("$batch"):
            return batch_response({rid: (200, {}, None) for rid in batch_ids(request)})
        return respond(204)

    run = run_engine(tmp_path, monkeypatch, lines, handler)
    bodies = [orjson.loads(r.body or b"{}") for _, r in run.requests]
    first = bodies[0]["requests"]
    assert [item["url"].rsplit("/", 1)[1] for item in first] == [oid(1), oid(2), oid(3)]
    assert first[0]["body"]["serverName"] == "mail1.example.com"
    assert bodies[1]["serverName"] == "second.example.com"  # the parked line, after the first was answered
    assert all(o.status == "succeeded" for o in run.outcomes)


def test_lanes_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one global slot, a tenant with 3 operations is not held back by one with 100."""
    lines = [update(n) for n in range(1, 101)] + [update(n, tenant="fabrikam") for n in range(101, 104)]
    settings = EngineSettings(seed=1, batch_size=1, concurrency=1, policy=POLICY)
    # Requests take (virtual) time, as real ones do: a zero-time transport would let contoso send while the job
    # reader thread is still reading fabrikam's lines.
    run = run_engine(tmp_path, monkeypatch, lines, lambda r: respond(204), settings=settings, latency=lambda: 0.01)
    order = [r.token.split("-")[0] for _, r in run.requests]
    assert len(order) == 103
    # Fabrikam's three go in the first round of turns: contoso's four workers are ahead of them at most.
    assert max(i for i, tenant in enumerate(order) if tenant == "fabrikam") < 4 + 3


def test_pacing_fills_every_window_to_the_limit_and_never_crosses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """250 writes at 100 per 20 s: the busiest sliding window holds exactly 100, and 250 take two windows, no more."""
    run = run_engine(tmp_path, monkeypatch, [update(n) for n in range(1, 251)], lambda r: respond(204), settings=SINGLE)
    times = [t for t, _ in run.requests]
    assert len(times) == 250
    assert busiest(times, 20.0) == 100  # was <= 90 with the leaky bucket
    # 100 at once, 100 when they leave the window (20 s plus the 0.25 s margin), then the last 50.
    assert run.elapsed_s == pytest.approx(2 * 20.25, abs=0.01)  # the bucket took 65.7 s


def test_stop_sends_nothing_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After stop(), no request starts; operations not sent have no outcome (a resume redoes them)."""
    run = run_engine(
        tmp_path,
        monkeypatch,
        [update(n) for n in range(1, 101)],
        lambda r: respond(204),
        settings=SINGLE,
        during=lambda engine: engine.stop(),
    )
    assert len(run.outcomes) == len(run.requests) < 100


def test_stop_ends_the_wait_for_a_cool_down_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers waiting out a 300 s Retry-After stop when asked; the throttled operations get no outcome."""
    answered: list[int] = []

    def throttling(request: HttpRequest) -> HttpResponse:
        answered.append(1)
        return respond(429, headers={"Retry-After": "300"})

    def stop_later(engine: Engine) -> None:
        asyncio.get_running_loop().call_later(10.0, engine.stop)

    run = run_engine(
        tmp_path, monkeypatch, [update(n) for n in range(1, 9)], throttling, settings=SINGLE, during=stop_later
    )
    assert run.elapsed_s == pytest.approx(10.0, abs=0.01)
    assert run.outcomes == [] and len(answered) == len(run.requests) >= 1


def test_a_wait_ends_false_on_stop_and_passes_any_other_cancellation_on() -> None:
    """stop() ends a worker's wait (False, not an error); a cancellation from outside still cancels the worker."""

    async def scenario() -> None:
        async with FakeTransport(lambda request: respond(204)) as transport:
            engine = Engine(
                tenants={}, auth=FakeAuth(), transport=transport, settings=SINGLE, on_outcome=lambda outcome: None
            )
            stopped = asyncio.ensure_future(engine._unless_stopped(asyncio.sleep(300)))
            cancelled = asyncio.ensure_future(engine._unless_stopped(asyncio.sleep(300)))
            await asyncio.sleep(1)
            cancelled.cancel()
            engine.stop()
            assert await stopped is False
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert await engine._unless_stopped(asyncio.sleep(300)) is False  # after a stop: no wait at all
            assert asyncio.get_running_loop().time() == pytest.approx(1.0)

    run_virtual(scenario())


# -- against a fake Graph with Intune's sliding write window (moved here from the end-to-end tests) ------------
def test_over_paced_tenant_429s_are_retried_individually(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pacing set above the service limit: sub-request 429s are retried alone and everything succeeds."""
    graph = FakeGraph()
    lines = [update(n) for n in range(1, 301)]
    run = run_engine(tmp_path, monkeypatch, lines, graph, overrides={"contoso": {"writes_per_20s": 400}})
    assert [o.status for o in run.outcomes] == ["succeeded"] * 300
    assert graph.throttled_total > 0
    assert graph.max_in_window("contoso") <= 100
    assert sum(o.throttled for o in run.outcomes) == graph.throttled_total
    assert graph.writes_total == 300 + graph.throttled_total  # only the throttled ones were sent again
    assert all(graph.objects[("contoso", oid(n))]["serverName"] == f"mail{n}.example.com" for n in range(1, 301))


@pytest.mark.parametrize("fmt", ["seconds", "fractional", "http-date", "absent"])
def test_retry_after_in_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Whole, fractional, HTTP-date and absent Retry-After all lead to success."""
    graph = FakeGraph(writes_per_window=20, retry_after=fmt)
    lines = [update(n) for n in range(1, 61)]
    run = run_engine(tmp_path, monkeypatch, lines, graph, overrides={"contoso": {"writes_per_20s": 60}})
    assert [o.status for o in run.outcomes] == ["succeeded"] * 60
    assert graph.throttled_total > 0
    assert len(graph.objects) == 60


def test_small_tenant_is_not_held_back_by_a_large_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 contoso lines come first, 3 fabrikam lines last: fabrikam finishes long before contoso does."""
    lines = [update(n) for n in range(1, 301)] + [update(n, tenant="fabrikam") for n in range(301, 304)]
    run = run_engine(tmp_path, monkeypatch, lines, FakeGraph(), latency=lambda: 0.01)
    # Contoso may fill its window at once (4 workers x 20), but fabrikam's request goes in that first round too.
    sent = [r.token.split("-")[0] for _, r in run.requests]
    assert sent.index("fabrikam") < 4 + 1
    order = [o.tenant for o in run.outcomes]
    assert max(i for i, t in enumerate(order) if t == "fabrikam") < 4 * 20 + 3  # was < 100 with the leaky bucket


def test_sync_throttled_is_resent_and_counted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429 means the sync was refused, not run: it is resent, and runs exactly once."""
    graph = FakeGraph(writes_per_window=3)
    lines = [sync(n) for n in range(1, 11)]
    run = run_engine(tmp_path, monkeypatch, lines, graph, overrides={"contoso": {"writes_per_20s": 50}})
    assert [o.status for o in run.outcomes] == ["succeeded"] * 10
    assert graph.throttled_total > 0
    assert set(graph.syncs.values()) == {1} and len(graph.syncs) == 10


def test_a_pacer_from_the_factory_hears_every_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine(pacer_factory=...) swaps the pacer: it hears each answer with its send time and raw Retry-After."""
    heard: list[Heard] = []

    class Recording(Pacer):
        def heard(self, answer: Heard) -> None:
            heard.append(answer)
            super().heard(answer)

    def factory(tenant: TenantConfig, clock: Clock) -> Pacing:
        return Recording(TenantLimits(writes_per_window=tenant.writes_per_20s), clock=clock)

    handler = script(respond(429, headers={"Retry-After": "3"}), respond(429))
    run = run_engine(tmp_path, monkeypatch, [update(1)], handler, settings=SINGLE, pacer_factory=factory)
    assert [(h.refused_writes, h.admitted_writes, h.retry_after_s) for h in heard] == [
        (1, 0, 3.0),
        (1, 0, None),  # absent: None, not a backoff made up by the engine
        (0, 1, None),
    ]
    assert [h.sent_at for h in heard] == pytest.approx([t for t, _ in run.requests], abs=1e-6)
    assert run.requests[1][0] >= 3.0


def test_the_values_built_per_operation_are_not_tracked_by_the_cyclic_collector() -> None:
    """An operation's values hold no reference cycle, so the collector does not track them: a run allocates no
    tracked object per operation (its collections stay short and rare)."""
    op = Operation("1", 1, "contoso", "exchangeConnector", "obj-1", "update", {"serverName": "s"})
    state = OpState(op)
    outcome = state.outcome(Status.SUCCEEDED, None, now=1.0, finished_at="2026-01-01T00:00:00.000Z")
    answer = orjson.dumps({"responses": [{"id": "1", "status": 204, "headers": {"A": "b"}}]})
    values = [op, state, outcome, fmt.result_line(outcome), request_for(op), *unpack(answer, 1)]
    assert [type(v).__name__ for v in values if gc.is_tracked(v)] == []
