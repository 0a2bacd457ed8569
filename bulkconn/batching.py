"""Pure: build request bodies, pack operations into ``$batch`` envelopes, parse single answers and sub-responses.

Sub-responses are matched to operations by id, never by position. A missing, duplicated or
unreadable sub-response becomes a per-operation :class:`SubResult` with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from msgspec import DecodeError, Raw, Struct, field, json

from bulkconn.model import ErrorInfo, Operation
from bulkconn.registry import ODATA_TYPE, Resource
from bulkconn.targets import UPDATE, resolve_resource

MAX_BATCH = 20
_IDS = [str(index) for index in range(1, MAX_BATCH + 1)]  # the sub-request ids envelope() gives, in order
_JSON = {"Content-Type": "application/json"}  # every sub-request's headers: one dict, only ever read


# Request and SubResult are not frozen: built once per operation on the hot path (a frozen __init__ costs 4x);
# gc=False for the same reason as model.Operation.
class Request(Struct, gc=False):
    """A single Graph request for one operation: method, URL below the version, JSON body."""

    method: str
    url: str
    body: dict[str, Any]


def request_for(op: Operation) -> Request:
    """``PATCH {item}`` with the patch, or ``POST {item}/{action}`` (``{collection}/{action}`` for an action bound
    to the collection) with the parameters. A PATCH body says the object's type: the line's, else the declared one."""
    if op.action == UPDATE:
        return Request("PATCH", *_patch(op))
    resource = resolve_resource(op.resource)
    action = resource.actions[op.action]
    target = f"/{resource.path}" if action.on_collection else resource.item_path(op.object_id)
    params = {"syncType": op.sync_type} if op.sync_type and not op.params else op.params
    return Request("POST", f"{target}/{action.name}", dict(params))


_PATCHED: dict[str, tuple[Resource, str]] = {}  # a line's resource name -> the resource and its declared type


def _patch(op: Operation) -> tuple[str, dict[str, Any]]:
    """The URL and body of ``op``'s PATCH. The resource is looked up once per name: the registry never changes,
    and the lookup and the declared type's name cost as much as the rest of a sub-request."""
    found = _PATCHED.get(op.resource)
    if found is None:
        resource = resolve_resource(op.resource)
        found = _PATCHED[op.resource] = (resource, resource.odata_type)
    resource, declared = found
    return resource.item_path(op.object_id), {ODATA_TYPE: op.odata_type or declared, **op.patch}


def envelope(ops: Sequence[Operation]) -> bytes:
    """A ``$batch`` body for ``ops``; sub-request ids are their positions as strings ("1".."20")."""
    if not 0 < len(ops) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} operations, not {len(ops)}")
    requests = []
    for rid, op in zip(_ids(len(ops)), ops, strict=True):
        if op.action == UPDATE:  # nearly every one: no Request in between
            method, (url, body) = "PATCH", _patch(op)
        else:
            req = request_for(op)
            method, url, body = req.method, req.url, req.body
        requests.append({"id": rid, "method": method, "url": url, "headers": _JSON, "body": body})
    return orjson.dumps({"requests": requests})


class SubResult(Struct, gc=False):
    """What the envelope says about one operation."""

    status: int | None  # None: the envelope gave no usable answer for it
    headers: Mapping[str, str] = field(default_factory=dict)  # read only: the sub-results of an answer may share one
    error: ErrorInfo | None = None
    # The sub-response's JSON body as text (empty: none), decoded by `body` only when asked: a write's answer is
    # never read, and skipping the object it holds is most of what decoding a $batch answer costs.
    raw_body: bytes | Raw = b""

    @property
    def body(self) -> Any:
        """The sub-response's JSON body (what a GET read), or None; decoded on each call."""
        return json.decode(self.raw_body) if self.raw_body else None


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


class _Sub(Struct, gc=False):  # gc=False: see model.Operation
    """A well-formed sub-response, as the fast path of :func:`unpack` decodes it (its body left undecoded)."""

    id: str
    status: int
    headers: dict[str, str] = {}
    body: Raw = Raw()


class _Envelope(Struct):
    responses: list[_Sub]


_decode_envelope = json.Decoder(_Envelope).decode


def unpack(raw: bytes, count: int) -> list[SubResult]:
    """Match an envelope's sub-responses to the ``count`` operations sent (ids "1".."count")."""
    # The fast path leaves bodies undecoded, so it would not see invalid UTF-8 in one: only for ASCII answers.
    if not raw.isascii():
        return _unpack_loose(raw, count)
    try:
        subs = _decode_envelope(raw).responses
    except DecodeError:  # not the well-formed shape (a ValidationError is a DecodeError): checked item by item
        return _unpack_loose(raw, count)
    seen = {sub.id.lower(): sub for sub in subs}
    if len(seen) != len(subs) or len(seen) != count:  # duplicated, missing or unasked-for ids
        return _unpack_loose(raw, count)
    try:
        matched = [seen[rid] for rid in _ids(count)]
    except KeyError:
        return _unpack_loose(raw, count)
    results = []
    raw_headers: dict[str, str] | None = None
    headers: dict[str, str] = {}
    for sub in matched:
        if sub.headers != raw_headers:  # the sub-responses of an answer mostly repeat the same few headers
            raw_headers, headers = sub.headers, {k.lower(): v for k, v in sub.headers.items()}
        status = sub.status
        error = None if 200 <= status < 300 else error_from_body(json.decode(sub.body) if sub.body else None, status)
        results.append(SubResult(status, headers, error, sub.body))
    return results


def _unpack_loose(raw: bytes, count: int) -> list[SubResult]:
    """:func:`unpack` for an answer that is not the well-formed shape: each sub-response checked on its own."""
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
    return SubResult(status, headers, error, b"" if "body" not in item else orjson.dumps(body))
