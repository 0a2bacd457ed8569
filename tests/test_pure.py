"""Pure modules without a loop or server: retry decisions, batching, job parsing, resources, pacing, redaction."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest

from bulkconn.batching import envelope, error_from_body, request_for, unpack
from bulkconn.engine.dispatch import new_request_id
from bulkconn.errors import JobError
from bulkconn.jobline import Invalid
from bulkconn.jobscan import scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.logs import redact
from bulkconn.model import Action, ErrorInfo, Operation
from bulkconn.resources import EXCHANGE_CONNECTOR, parse_datetime_offset, validate_patch
from bulkconn.retry import Answer, Attempt, Done, Retry, RetryPolicy, backoff_s, classify, decide, parse_retry_after

POLICY = RetryPolicy()
RNG = random.Random(1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10", 10.0), ("2.128", 2.128), ("0", 0.0), (None, None), ("soon", None), ("-3", None), ("nan", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Whole and fractional seconds parse; absent, negative or garbage values mean 'back off'."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP date is the seconds until then (never negative)."""
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    later = format_datetime(now + dt.timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(7)
    assert parse_retry_after(format_datetime(now - dt.timedelta(seconds=5), usegmt=True), now=now) == 0.0


def _decide(
    status: int | None,
    *,
    attempt: int = 1,
    idempotent: bool = True,
    retry_after: str | None = None,
    elapsed: float = 0.0,
    policy: RetryPolicy = POLICY,
) -> Done | Retry:
    return classify(
        status=status,
        retry_after=retry_after,
        error=ErrorInfo("x", "y"),
        attempt=attempt,
        elapsed_s=elapsed,
        idempotent=idempotent,
        policy=policy,
        rng=RNG,
    )


def test_classify_rules() -> None:
    """2xx done; 4xx final; 429/5xx/no answer retried; Retry-After honoured; 503 asks for a new connection."""
    assert _decide(200) == Done(True) and _decide(204) == Done(True)
    assert isinstance(_decide(400), Done) and not _decide(404).succeeded  # type: ignore[union-attr]
    throttled = _decide(429, retry_after="3")
    assert isinstance(throttled, Retry) and throttled.after_s == 3 and throttled.throttled
    paced = _decide(429, attempt=5)  # no Retry-After: the pacer's learned window times the resend, not a backoff
    assert isinstance(paced, Retry) and paced.after_s == 0 and paced.throttled
    unavailable = _decide(503)
    assert isinstance(unavailable, Retry) and unavailable.new_connection and not unavailable.throttled
    assert isinstance(_decide(None), Retry) and isinstance(_decide(504), Retry)


def test_classify_budgets() -> None:
    """Attempts run out (500 sooner than others), and the time budget is respected."""
    assert isinstance(_decide(500, attempt=2), Retry)
    assert isinstance(_decide(500, attempt=3), Done)
    assert isinstance(_decide(503, attempt=9), Retry)
    final = _decide(503, attempt=10)
    assert isinstance(final, Done) and "gave up after 10 attempts" in final.error.message  # type: ignore[union-attr]
    late = _decide(429, retry_after="30", elapsed=880)
    assert isinstance(late, Done) and "time budget" in late.error.message  # type: ignore[union-attr]


def test_sync_is_not_resent_after_an_ambiguous_answer() -> None:
    """A sync is resent after a 429 only; a 5xx or no answer makes it 'uncertain'."""
    assert isinstance(_decide(429, idempotent=False), Retry)
    for status in (500, 503, 504, None):
        decision = _decide(status, idempotent=False)
        assert isinstance(decision, Done) and decision.uncertain
    allowed = RetryPolicy(retry_uncertain_sync=True)
    assert isinstance(_decide(503, idempotent=False, policy=allowed), Retry)


def test_backoff_is_full_jitter_and_capped() -> None:
    """Backoff stays within [0, min(cap, base*2^(n-1))]."""
    rng = random.Random(3)
    for attempt in range(1, 12):
        wait = backoff_s(attempt, POLICY, rng)
        assert 0 <= wait <= min(POLICY.backoff_cap_s, POLICY.backoff_base_s * 2 ** (attempt - 1))


def _op(n: int, action: Action = Action.UPDATE) -> Operation:
    return Operation(
        str(n),
        n,
        "contoso",
        "exchangeConnector",
        f"id-{n}",
        action,
        {"serverName": f"s{n}"},
        sync_type="deltaSync" if action is Action.SYNC else "",
    )


def test_envelope_and_request_bodies() -> None:
    """PATCH bodies carry @odata.type; sync posts its syncType; ids are positions; 21 is refused."""
    body = orjson.loads(envelope([_op(1), _op(2, Action.SYNC)]))
    first, second = body["requests"]
    assert first == {
        "id": "1",
        "method": "PATCH",
        "url": "/deviceManagement/exchangeConnectors/id-1",
        "headers": {"Content-Type": "application/json"},
        "body": {"@odata.type": EXCHANGE_CONNECTOR.odata_type, "serverName": "s1"},
    }
    assert second["url"].endswith("/id-2/sync") and second["body"] == {"syncType": "deltaSync"}
    assert request_for(_op(3)).method == "PATCH"
    with pytest.raises(ValueError):
        envelope([_op(i) for i in range(21)])


def test_unpack_matches_by_id_not_position() -> None:
    """Out-of-order sub-responses land on the right operation; missing/duplicate/garbage are per-op errors."""
    raw = orjson.dumps(
        {
            "responses": [
                {
                    "id": "3",
                    "status": 429,
                    "headers": {"Retry-After": "2"},
                    "body": {"error": {"code": "TooManyRequests", "message": "slow"}},
                },
                {"id": "1", "status": 200, "body": {}},
                {"id": "1", "status": 200, "body": {}},
                {"id": "2", "status": 204},
            ]
        }
    )
    first, second, third, fourth = unpack(raw, 4)
    assert first.status is None and first.error and first.error.code == "BatchResponseDuplicate"
    assert second.status == 204 and second.error is None
    assert third.status == 429 and third.headers["retry-after"] == "2" and third.error.code == "TooManyRequests"  # type: ignore[union-attr]
    assert fourth.status is None and fourth.error.code == "BatchResponseMissing"  # type: ignore[union-attr]
    assert {r.error.code for r in unpack(b"<html>", 2)} == {"BatchResponseInvalid"}  # type: ignore[union-attr]


def test_datetime_offset_parsing() -> None:
    """Graph's 7-digit fractions and offsets parse; a missing offset or an impossible date does not."""
    assert parse_datetime_offset("2017-01-01T00:02:49.3205976-08:00") is not None
    assert parse_datetime_offset("2017-01-01T00:02:49Z") is not None
    for bad in ("2017-01-01T00:02:49", "2017-02-30T00:00:00Z", "yesterday", "2017-01-01T00:00:00+15:00"):
        assert parse_datetime_offset(bad) is None


def test_validate_patch_accepts_the_seed_example_and_unknown_future_value() -> None:
    """The documented example and the evolvable-enum sentinel are valid; a job may not set id."""
    seed = {
        "@odata.type": EXCHANGE_CONNECTOR.odata_type,
        "status": "unknownFutureValue",
        "exchangeConnectorType": "dedicated",
        "lastSyncDateTime": "2017-01-01T00:02:49.3205976-08:00",
    }
    assert validate_patch(EXCHANGE_CONNECTOR, seed) == []
    assert [p.property for p in validate_patch(EXCHANGE_CONNECTOR, {"id": "x"})] == ["id"]


def test_scan_job_defaults_override_and_duplicate_keys(tmp_path: Path) -> None:
    """Defaults merge under each line's patch; a repeated explicit key is invalid; lines re-read by offset."""
    job = tmp_path / "job.jsonl"
    job.write_text(
        '{"defaults": {"tenant": "contoso", "patch": {"serverName": "d", "version": "1"}}}\n'
        '{"id": "a", "patch": {"serverName": "own"}}\n'
        "\n"
        '{"id": "b", "key": "k1"}\n'
        '{"id": "c", "key": "k1"}\n'
        '{"tenant": "fabrikam", "id": "d", "action": "sync", "syncType": "fullSync"}\n'
        '{"id": "e", "key": "7"}\n'
    )
    invalid: list[Invalid] = []
    scan = scan_job(job, ["contoso", "fabrikam"], on_invalid=invalid.append)
    assert [(i.line, i.key) for i in invalid] == [(5, "k1"), (7, "7")]
    assert "duplicate key 'k1'" in invalid[0].message
    reader = LaneReader(scan, "contoso")
    ops = reader.read(10)
    reader.close()
    assert [(o.line, o.key, o.patch) for o in ops] == [
        (2, "2", {"serverName": "own", "version": "1"}),
        (4, "k1", {"serverName": "d", "version": "1"}),
    ]
    assert scan.actions == {"update": 2, "sync": 1}


def test_scan_job_rejects_a_bad_defaults_line(tmp_path: Path) -> None:
    """A defaults line with an unknown field stops the job with file:line."""
    job = tmp_path / "job.jsonl"
    job.write_text('{"defaults": {"colour": "red"}}\n')
    with pytest.raises(JobError, match=r"job.jsonl:1: unknown field 'colour'"):
        scan_job(job, ["contoso"], on_invalid=lambda i: None)


def test_a_misspelt_field_gets_a_suggestion_and_broken_json_a_column_of_its_own_line(tmp_path: Path) -> None:
    """'wher' suggests 'where' (selector fields are known fields); JSON errors say the column within the file's line."""
    job = tmp_path / "job.jsonl"
    job.write_text(
        '{"tenant": "contoso", "wher": {"serverName": "x"}, "patch": {"serverName": "y"}}\n'
        '{"tenant": "contoso", "id": "abc", "patch": {"serverName": "y"}\n'
        '{"tenant": "contoso", "id": "abc" "patch": 1}\n'
        '{"tenant": "contoso", "id": "\u00e9\u00e9", x}\r\n'
    )
    invalid: list[Invalid] = []
    scan_job(job, ["contoso"], on_invalid=invalid.append)
    messages = [i.message for i in invalid]
    assert messages[0].startswith("line 1: unknown field 'wher' (did you mean 'where'?)")
    assert "select" in messages[0] and "where" in messages[0].split("known: ")[1]
    assert messages[1] == "line 2: malformed JSON (unexpected end of data at the end of the line: is a } or ] missing?)"
    assert messages[2] == "line 3: malformed JSON (unexpected character, expected ',' or '}' at column 35)"
    assert messages[3] == "line 4: malformed JSON (unexpected character, expected a string key at column 35)"


def test_redaction() -> None:
    """Anything token-shaped in a log line is masked."""
    text = redact("Authorization: Bearer abc.def.ghi client_secret=hunter2&x=1 eyJhbGciOiJIUzI1.eyJzdWIiOiIx.sig")
    assert "abc.def" not in text and "hunter2" not in text and "eyJhbGci" not in text


def test_utf8_bom_on_the_first_line_is_accepted(tmp_path: Path) -> None:
    """A job saved with a UTF-8 byte-order mark (Windows editors) validates and re-reads correctly."""
    job = tmp_path / "job.jsonl"
    job.write_bytes(b'\xef\xbb\xbf{"tenant": "contoso", "id": "a", "patch": {"version": "1"}}\n')
    invalid: list[Invalid] = []
    scan = scan_job(job, ["contoso"], on_invalid=invalid.append)
    assert invalid == [] and scan.valid == 1
    reader = LaneReader(scan, "contoso")
    assert reader.read(1)[0].object_id == "a"
    reader.close()


def test_intune_nested_error_message_is_unwrapped() -> None:
    """Intune's JSON-encoded _version 3 message becomes its readable Message (with the Activity ID)."""
    nested = orjson.dumps({"_version": 3, "Message": "Not found - Activity ID: abc", "RetryAfter": None}).decode()
    error = error_from_body({"error": {"code": "ResourceNotFound", "message": nested}}, 404)
    assert error == ErrorInfo("ResourceNotFound", "Not found - Activity ID: abc")
    plain = error_from_body({"error": {"code": "BadRequest", "message": "{not json _version"}}, 400)
    assert plain.message == "{not json _version"


def _answer(
    status: int | None, *, whole: bool = False, reauthenticated: bool = False, idempotent: bool = True
) -> Done | Retry:
    return decide(
        Answer(status=status, error=ErrorInfo("code", "message") if status != 200 else None, whole_envelope=whole),
        Attempt(number=1, elapsed_s=0.0, idempotent=idempotent, reauthenticated=reauthenticated),
        tenant="contoso",
        policy=POLICY,
        rng=random.Random(1),
    )


def test_decide_401_reauthenticates_once() -> None:
    """A first 401 is retried at once with a fresh token; a second one is final."""
    first = _answer(401)
    assert isinstance(first, Retry) and first.reauthenticate and first.after_s == 0 and not first.throttled
    again = _answer(401, reauthenticated=True)
    assert isinstance(again, Done) and again.status == "failed" and again.quarantine is None


def test_decide_403_fails_and_quarantines_the_tenant() -> None:
    """A 403 is a missing permission: the operation fails and the tenant's other operations will too."""
    decision = _answer(403)
    assert isinstance(decision, Done) and decision.status == "failed"
    assert decision.error == ErrorInfo("code", "message")
    assert decision.quarantine == ErrorInfo("code", "permission missing for tenant 'contoso': message")


def test_decide_statuses_of_done() -> None:
    """Done maps to the report's statuses: succeeded, failed, uncertain."""
    assert _answer(200).status == "succeeded"  # type: ignore[union-attr]
    assert _answer(404).status == "failed"  # type: ignore[union-attr]
    assert _answer(503, idempotent=False).status == "uncertain"  # type: ignore[union-attr]


def test_client_request_ids_are_random_uuids_as_graph_expects() -> None:
    """Each id reads back as the same version-4 RFC 4122 UUID, and no two are alike."""
    ids = [new_request_id() for _ in range(2_000)]
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert len(set(ids)) == len(ids)
