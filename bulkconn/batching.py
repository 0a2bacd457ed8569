"""Pure: build request bodies, pack operations into ``$batch`` envelopes, parse single answers and sub-responses.

Sub-responses are matched to operations by id, never by position. A missing, duplicated or
unreadable sub-response becomes a per-operation :class:`SubResult` with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from msgspec import Struct, field

from bulkconn.model import Action, ErrorInfo, Operation
from bulkconn.registry import ODATA_TYPE
from bulkconn.targets import resolve_resource

MAX_BATCH = 20
_IDS = [str(index) for index in range(1, MAX_BATCH + 1)]  # the sub-request ids envelope() gives, in order
_JSON = {"Content-Type": "application/json"}  # every sub-request's headers: one dict, only ever read


# Request and SubResult are not frozen: built once per operation on the hot path (a frozen __init__ costs 4x).
class Request(Struct):
    """A single Graph request for one operation: method, URL below the version, JSON body."""

    method: str
    url: str
    body: dict[str, Any]


def request_for(op: Operation) -> Request:
    """``PATCH {item}`` with the patch, or ``POST {item}/{action}`` (``{collection}/{action}`` for an action bound
    to the collection) with the parameters. A PATCH body says the object's type: the line's, else the declared one."""
    resource = resolve_resource(op.resource)
    if op.action == Action.UPDATE:
        body = {ODATA_TYPE: op.odata_type or resource.odata_type, **op.patch}
        return Request("PATCH", resource.item_path(op.object_id), body)
    action = resource.actions[op.action]
    target = f"/{resource.path}" if action.on_collection else resource.item_path(op.object_id)
    params = {"syncType": op.sync_type} if op.sync_type and not op.params else op.params
    return Request("POST", f"{target}/{action.name}", dict(params))


def envelope(ops: Sequence[Operation]) -> bytes:
    """A ``$batch`` body for ``ops``; sub-request ids are their positions as strings ("1".."20")."""
    if not 0 < len(ops) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} operations, not {len(ops)}")
    requests = []
    for rid, op in zip(_ids(len(ops)), ops, strict=True):
        req = request_for(op)
        requests.append({"id": rid, "method": req.method, "url": req.url, "headers": _JSON, "body": req.body})
    return orjson.dumps({"requests": requests})


class SubResult(Struct):
    """What the envelope says about one operation."""

    status: int | None  # None: the envelope gave no usable answer for it
    headers: Mapping[str, str] = field(default_factory=dict)
    error: ErrorInfo | None = None
    body: Any = None  # the sub-response's JSON body (what a GET read)


def readable_message(message: str) -> str:
    """Intune puts a JSON-encoded ``{"_version": 3, "Message": ...}`` string in ``error.message``:
    keep its ``Message`` (which carries the Activity ID) instead of the escaped JSON."""
    if message.lstrip().startswith("{") and "_version" in message:
        try:
            nested = orjson.loads(message)
        except orjson.JSONDecodeError:
            return message
        if isinstance(nested, dict) and isinstance(nested.get("Message"), str):
            return str(nested["Message"])
    return message


def error_from_body(body: Any, status: int) -> ErrorInfo:
    """The OData error in a response body, or a generic one."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        message = readable_message(str(err.get("message") or f"HTTP {status}"))
        return ErrorInfo(str(err.get("code") or status), message[:2000])
    return ErrorInfo(str(status), f"HTTP {status}")


def parse_single(status: int, headers: Mapping[str, str], body: bytes) -> SubResult:
    """The answer to a single (non-``$batch``) request, in the same shape as a sub-response.

    A redirect (never followed) and an error that is not Graph's JSON (an HTML page from a proxy or a
    gateway, plain text) get a message saying so, since their status alone would mislead.
    """
    if 200 <= status < 300:
        return SubResult(status, headers)
    if 300 <= status < 400:
        return SubResult(status, headers, redirect_error(status, headers))
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return SubResult(status, headers, error_from_body(data, status))
    return SubResult(status, headers, foreign_error(status, headers, body))


def redirect_error(status: int, headers: Mapping[str, str]) -> ErrorInfo:
    """A 3xx: Graph does not redirect these requests, so something in between does; it is not followed."""
    location = headers.get("location", "")
    target = location.split("/")[2] if "://" in location else (location or "nowhere")
    return ErrorInfo(
        str(status),
        f"HTTP {status} redirect to {target[:200]}, not followed: bulkconn sends requests (and the token) only to "
        "the configured Graph URL; check graph_url and any proxy in between",
    )


def foreign_error(status: int, headers: Mapping[str, str], body: bytes) -> ErrorInfo:
    """An error answer without Graph's OData error body: say what came instead, never the body itself."""
    if not body:
        return ErrorInfo(str(status), f"HTTP {status}")
    kind = headers.get("content-type", "").split(";")[0].strip() or "no content type"
    server = headers.get("server", "")
    sender = f" (server: {server[:60]})" if server else ""
    what = (
        "an HTML page" if "html" in kind or body.lstrip()[:1] == b"<" else f"a body that is not Graph's JSON ({kind})"
    )
    return ErrorInfo(
        str(status),
        f"HTTP {status} with {what} instead of a Graph answer{sender}: from a proxy or gateway in front of Graph?",
    )


def unpack(raw: bytes, count: int) -> list[SubResult]:
    """Match an envelope's sub-responses to the ``count`` operations sent (ids "1".."count")."""
    try:
        data = orjson.loads(raw)
        responses = data["responses"]
        if not isinstance(responses, list):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        bad = SubResult(None, error=ErrorInfo("BatchResponseInvalid", "the $batch answer was not readable JSON"))
        return [bad] * count
    seen: dict[str, dict[str, Any]] = {}
    duplicated: set[str] = set()
    for item in responses:
        if not isinstance(item, dict) or "id" not in item:
            continue
        rid = item["id"]
        rid = (rid if type(rid) is str else str(rid)).lower()
        if rid in seen:
            duplicated.add(rid)
        seen[rid] = item
    return [_sub_result(rid, seen, duplicated, count) for rid in _ids(count)]


def _ids(count: int) -> list[str]:
    return _IDS[:count] if count <= MAX_BATCH else [str(index) for index in range(1, count + 1)]


def _sub_result(rid: str, seen: dict[str, dict[str, Any]], duplicated: set[str], count: int) -> SubResult:
    """The sub-response for id ``rid``, matched by id alone (never by position), or why there is none usable."""
    item = seen.get(rid)
    if item is None:
        strangers = sorted(set(seen) - set(_ids(count)))[:5]
        also = f" (it holds ids that were not asked for: {', '.join(strangers)})" if strangers else ""
        return SubResult(
            None, error=ErrorInfo("BatchResponseMissing", f"the $batch answer has no sub-response {rid}{also}")
        )
    if duplicated and rid in duplicated:
        message = f"the $batch answer holds sub-response {rid} twice"
        return SubResult(None, error=ErrorInfo("BatchResponseDuplicate", message))
    status = item.get("status")
    if type(status) is not int:  # bool is a subclass of int, and no status
        message = f"sub-response {rid} of the $batch answer has no valid status"
        return SubResult(None, error=ErrorInfo("BatchResponseInvalid", message))
    raw_headers = item.get("headers")
    # JSON names are str already; a value may be a number
    headers = (
        {k.lower(): v if type(v) is str else str(v) for k, v in raw_headers.items()}
        if isinstance(raw_headers, dict)
        else {}
    )
    body = item.get("body")
    error = None if 200 <= status < 300 else error_from_body(body, status)
    return SubResult(status, headers, error, body)
