"""JSON ``$batch`` (docs/service-facts.md §1 and §2).

The envelope is refused whole (400) when it cannot be parsed or breaks a batch rule; otherwise it
is 200 and each sub-request is evaluated on its own, throttling included. Sub-responses come back in
an order that differs from the request order, deterministically for a given seed.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from typing import Any

import orjson

from bulkconn.emulator.core import MISSING, EmulatorCore, Principal, SubRequest, SubResponse
from bulkconn.emulator.graph import handle

MAX_REQUESTS = 20
_ABSOLUTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_INVALID = "Invalid batch payload format."
_URL_SAFE = str.maketrans("-_", "+/")  # base64url to base64: a body may come in either alphabet


class BatchRejected(Exception):
    """The whole envelope is refused with 400 and this message."""


def _check_items(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items:
        raise BatchRejected(_INVALID)
    if len(items) > MAX_REQUESTS:
        raise BatchRejected(f"The number of requests in a batch ({len(items)}) exceeds the limit of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise BatchRejected(_INVALID)
        rid, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(rid, str) or not rid or not isinstance(method, str) or not isinstance(url, str):
            raise BatchRejected(_INVALID)
        if rid.lower() in seen:
            raise BatchRejected(f"Request Id {rid} has to be unique in a batch.")
        seen.add(rid.lower())
        if _ABSOLUTE.match(url):
            raise BatchRejected(_INVALID)
        headers = item.get("headers", {})
        if not isinstance(headers, dict):
            raise BatchRejected(_INVALID)
        if "body" in item and not any(k.lower() == "content-type" for k in headers):
            raise BatchRejected(f"Write request with id '{rid}' does not contain a Content-Type header.")
    return items


def _check_dependencies(items: list[dict[str, Any]]) -> list[str | None]:
    """Each request's single dependency (lower-case id) or None; refuses every other pattern."""
    earlier: list[str] = []
    deps: list[str | None] = []
    for item in items:
        raw = item.get("dependsOn")
        if raw is None:
            deps.append(None)
        else:
            if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
                raise BatchRejected(_INVALID)
            if len(raw) != 1:
                raise BatchRejected("Batch should be either fully sequential or fully parallel.")
            dep = raw[0].lower()
            if dep not in earlier:
                raise BatchRejected(f"Invalid dependency for request Id {item['id']}.")
            deps.append(dep)
        earlier.append(item["id"].lower())
    present = [d for d in deps if d is not None]
    if not present:
        return deps
    serial = deps[0] is None and all(deps[i] == earlier[i - 1] for i in range(1, len(deps)))
    same = len(set(present)) == 1 and deps[earlier.index(present[0])] is None
    if not (serial or same):
        raise BatchRejected("Batch should be either fully sequential or fully parallel.")
    return deps


def _decoded_body(body: Any) -> tuple[Any, bool]:
    """A sub-request body and whether it is unreadable: a JSON object as is, a string as base64.

    Graph's JSON batching format takes a body as a JSON object, or as a base64-encoded string
    (https://learn.microsoft.com/graph/json-batching#request-format); the decoded bytes are then read as the
    request's own body would be. msgraph-core sends every body that is not a non-empty JSON object as base64
    (an empty PATCH is ``"e30="``).
    """
    if not isinstance(body, str):
        return body, False
    try:
        padded = body.translate(_URL_SAFE) + "=" * (-len(body) % 4)
        return orjson.loads(base64.b64decode(padded, validate=True)), False
    except (binascii.Error, ValueError):
        return MISSING, True


def _sub_request(item: dict[str, Any], envelope: SubRequest) -> SubRequest:
    url: str = item["url"]
    path, _, query_string = url.partition("?")
    if not path.startswith("/"):
        path = "/" + path
    query: dict[str, str] = {}
    for pair in filter(None, query_string.split("&")):
        key, _, value = pair.partition("=")
        query[key] = value
    headers = {str(k).lower(): str(v) for k, v in item.get("headers", {}).items()}
    body, invalid = _decoded_body(item.get("body", MISSING))
    return SubRequest(
        method=item["method"].upper(),
        path=path,
        query=query,
        headers=headers,
        body=body,
        body_invalid=invalid,
        request_id=envelope.request_id,
        client_request_id=envelope.client_request_id,
        version=envelope.version,
    )


def _render(item_id: str, response: SubResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item_id, "status": response.status, "headers": dict(response.headers)}
    if response.body is not None:
        out["body"] = response.body
    return out


def handle_batch(core: EmulatorCore, principal: Principal, envelope: SubRequest, now: float) -> SubResponse:
    """Answer a ``$batch`` envelope."""
    core.stats.batches_total += 1
    body = envelope.body
    try:
        if envelope.body_invalid or not isinstance(body, dict):
            raise BatchRejected(_INVALID)
        items = _check_items(body.get("requests"))
        deps = _check_dependencies(items)
    except BatchRejected as exc:
        return core.error(400, "BadRequest", str(exc), envelope)
    failed: set[str] = set()
    rendered: list[dict[str, Any]] = []
    for item, dep in zip(items, deps, strict=True):
        if dep is not None and dep in failed:
            response = core.error(
                424, "FailedDependency", f"The request was not run because request {dep} failed.", envelope
            )
        else:
            response = handle(core, principal, _sub_request(item, envelope), now)
        if response.status >= 400:
            failed.add(item["id"].lower())
        rendered.append(_render(item["id"], response))
    core.batch_seq += 1
    order = list(range(len(rendered)))
    random.Random(f"{core.options.seed}:{core.batch_seq}").shuffle(order)
    if len(order) > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return SubResponse(
        200,
        {"Content-Type": "application/json", "OData-Version": "4.0"},
        {"responses": [rendered[i] for i in order]},
    )
