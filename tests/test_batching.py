"""``$batch`` bodies and answers: the fast paths give what the general ones give, byte for byte and field for field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bulkconn import batching
from bulkconn.batching import SubResult, envelope, request_for, unpack
from bulkconn.model import Action, Operation
from bulkconn.resources import EXCHANGE_CONNECTOR


def _op(n: int, resource: str = "exchangeConnector", **fields: Any) -> Operation:
    return Operation(str(n), n, "contoso", resource, f"id-{n}", Action.UPDATE, {"displayName": f"d{n}"}, **fields)


def _fields(sub: SubResult) -> tuple[Any, ...]:
    return sub.status, dict(sub.headers), sub.error, sub.body


def test_envelope_sub_requests_are_the_single_requests_of_each_operation() -> None:
    """Each sub-request is what the operation sent alone would be (URL, method, body with its type), whatever the
    resource: the per-resource lookup the envelope keeps never hands one resource's path or type to another."""
    ops = [
        _op(1, "deviceCategories"),
        _op(2),
        _op(3, "deviceCategories"),
        _op(4, "deviceCompliancePolicies", odata_type="#microsoft.graph.windows10CompliancePolicy"),
        _op(5, "deviceCompliancePolicies", odata_type="#microsoft.graph.iosCompliancePolicy"),
        Operation("6", 6, "contoso", "exchangeConnector", "id-6", Action.SYNC, sync_type="fullSync"),
    ]
    for _ in range(2):  # the second time from the remembered lookups
        sent = orjson.loads(envelope(ops))["requests"]
        assert [s["id"] for s in sent] == ["1", "2", "3", "4", "5", "6"]
        for sub, op in zip(sent, ops, strict=True):
            alone = request_for(op)
            assert (sub["method"], sub["url"], sub["body"]) == (alone.method, alone.url, alone.body)
            assert sub["headers"] == {"Content-Type": "application/json"}
    bodies = [s["body"] for s in orjson.loads(envelope(ops))["requests"]]
    assert bodies[1]["@odata.type"] == EXCHANGE_CONNECTOR.odata_type
    assert bodies[0]["@odata.type"] == "#microsoft.graph.deviceCategory"
    assert bodies[3]["@odata.type"] == "#microsoft.graph.windows10CompliancePolicy"
    assert bodies[4]["@odata.type"] == "#microsoft.graph.iosCompliancePolicy"
    assert list(bodies[0]) == ["@odata.type", "displayName"]  # the type first, as OData wants it


WELL_FORMED = [
    {"id": "2", "status": 204, "headers": {"Request-Id": "r-2", "Content-Type": "application/json"}},
    {"id": "1", "status": 200, "headers": {}, "body": {"id": "a", "n": [1, 2.5, None, True], "s": "é"}},
    {"id": "4", "status": 429, "headers": {"Retry-After": "3"}, "body": {"error": {"code": "TooMany", "message": "m"}}},
    {"id": "3", "status": 404, "body": {"error": {"code": "NotFound", "message": "gone"}}},
    {"id": "5", "status": 500, "body": "plain text"},
    {"id": "6", "status": 200, "body": None},
]


def test_a_well_formed_answer_reads_as_the_item_by_item_reading_does() -> None:
    """The fast reading (bodies decoded only when asked) gives every status, header, error and body the careful
    reading gives, sub-responses in any order."""
    raw = orjson.dumps({"responses": WELL_FORMED})
    fast = unpack(raw, 6)
    assert [_fields(s) for s in fast] == [_fields(s) for s in batching._unpack_loose(raw, 6)]
    assert fast[0].body == {"id": "a", "n": [1, 2.5, None, True], "s": "é"}
    assert fast[1].headers == {"request-id": "r-2", "content-type": "application/json"} and fast[1].body is None
    assert fast[3].headers["retry-after"] == "3" and fast[3].error is not None and fast[3].error.code == "TooMany"
    assert fast[2].error is not None and fast[2].error.message == "gone"


@pytest.mark.parametrize(
    "responses",
    [
        [{"id": 1, "status": 200}],  # a number for an id
        [{"id": "1", "status": 200, "headers": {"Retry-After": 3}}],  # a number for a header
        [{"id": "1", "status": True}],  # no valid status
        [{"id": "1", "status": 200}, {"id": "1", "status": 200}],  # duplicated
        [{"id": "1", "status": 200}, {"id": "9", "status": 200}],  # one missing, one nobody asked for
        [{"id": "1", "status": 200}, "garbage"],
        [{"id": "1", "status": 200, "body": "\u00e9"}, {"id": "2", "status": 200, "body": {}}],  # not ASCII
    ],
)
def test_every_other_answer_is_read_item_by_item(responses: list[Any]) -> None:
    """An answer that is not the well-formed shape gives exactly what the careful reading gives."""
    raw = orjson.dumps({"responses": responses})
    assert [_fields(s) for s in unpack(raw, 2)] == [_fields(s) for s in batching._unpack_loose(raw, 2)]


def test_invalid_utf8_in_a_body_makes_the_answer_unreadable() -> None:
    """A body the fast reading would skip undecoded still makes the whole answer unreadable, as it always did."""
    raw = b'{"responses":[{"id":"1","status":200,"body":"\xff"},{"id":"2","status":200}]}'
    assert {s.error.code for s in unpack(raw, 2) if s.error} == {"BatchResponseInvalid"}
