"""The Graph resource routes: ``/deviceManagement/exchangeConnectors`` and its items and action.

:func:`handle` answers one :class:`SubRequest` for an authenticated :class:`Principal`. It is used
for direct HTTP requests and for every sub-request of a ``$batch`` alike, so both are evaluated
the same way, throttling included.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any

from bulkconn.emulator.core import MISSING, EmulatorCore, Principal, SubRequest, SubResponse
from bulkconn.emulator.state import READ_ROLES, WRITE_ROLES
from bulkconn.resources import EXCHANGE_CONNECTOR, validate_patch

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COLLECTION = re.compile(r"^/devicemanagement/exchangeconnectors/?$", re.IGNORECASE)
_ITEM = re.compile(r"^/devicemanagement/exchangeconnectors/([^/]+)/?$", re.IGNORECASE)
_SYNC = re.compile(r"^/devicemanagement/exchangeconnectors/([^/]+)/(?:microsoft\.graph\.)?sync/?$", re.IGNORECASE)
_ALLOWED = {"collection": ("GET", "POST"), "item": ("GET", "PATCH", "DELETE"), "sync": ("POST",)}


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # collection | item | sync
    object_id: str = ""


def resolve(path: str) -> Route | None:
    """Map a path below the version segment to a route, or ``None`` when there is none."""
    if _COLLECTION.match(path):
        return Route("collection")
    if m := _SYNC.match(path):
        return Route("sync", m.group(1))
    if m := _ITEM.match(path):
        return Route("item", m.group(1))
    return None


def _unknown_route(core: EmulatorCore, req: SubRequest) -> SubResponse:
    segments = [s for s in req.path.split("/") if s]
    if segments and segments[0].lower() in ("v1.0", "beta"):
        return core.error(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.", req)
    if len(segments) >= 1 and segments[0].lower() == "devicemanagement":
        template = "~/singleton/navigation/key/" + "/".join("segment" for _ in segments[3:])
        return core.error(
            400,
            "No method match route template",
            f"No OData route exists that match template {template.rstrip('/')} with http verb {req.method} "
            f"for request {req.path}.",
            req,
        )
    bad = segments[0] if segments else ""
    return core.error(400, "BadRequest", f"Resource not found for the segment '{bad}'.", req)


def _json_body_problem(core: EmulatorCore, req: SubRequest) -> SubResponse | None:
    content_type = req.headers.get("content-type", "")
    if req.body is MISSING and not req.body_invalid:
        return core.error(400, "BadRequest", "Empty Payload. JSON content expected.", req)
    if not content_type:
        return core.error(
            400,
            "BadRequest",
            "A supported MIME type could not be found that matches "
            "the content type of the request: a Content-Type header is required.",
            req,
        )
    if content_type.split(";")[0].strip().lower() != "application/json":
        return core.error(
            400,
            "BadRequest",
            f"A supported MIME type could not be found that matches the content type of the response. "
            f"The content type '{content_type}' is not supported; use application/json.",
            req,
        )
    if req.body_invalid:
        return core.error(400, "BadRequest", "Invalid JSON. The request body could not be parsed.", req)
    if not isinstance(req.body, dict):
        return core.error(400, "BadRequest", "Invalid request body: a JSON object is expected.", req)
    return None


def _status_fault(core: EmulatorCore, principal: Principal, req: SubRequest) -> SubResponse | None:
    faults = core.faults_for(principal.tenant)
    if not faults.any_status_fault:
        return None
    roll = core.fault_rng.random()
    for p, status, with_retry in (
        (faults.p500, 500, False),
        (faults.p503, 503, True),
        (faults.p503_bare, 503, False),
        (faults.p504, 504, False),
    ):
        if roll < p:
            core.stats.faults_total += 1
            headers = core.retry_after_header(0.5 * core.options.time_scale) if with_retry else {}
            code = {500: "InternalError", 503: "serviceNotAvailable", 504: "GatewayTimeout"}[status]
            return core.error(
                status, code, "The service is temporarily unavailable (injected fault).", req, headers=headers
            )
        roll -= p
    return None


def _count(core: EmulatorCore, principal: Principal, is_write: bool) -> None:
    stats = core.stats
    stats.requests_total += 1
    stats.requests[principal.tenant.alias] += 1
    if is_write:
        stats.writes_total += 1
        stats.writes[principal.tenant.alias] += 1


def _gate(core: EmulatorCore, principal: Principal, req: SubRequest, route: Route, now: float) -> SubResponse | None:
    """Method, permission, throttling and injected faults, in the order Graph's gateway applies them."""
    is_write = req.method in WRITE_METHODS
    if req.method not in _ALLOWED[route.kind]:
        return core.error(
            405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.", req
        )
    needed = WRITE_ROLES if is_write else READ_ROLES
    if not principal.permissions & needed:
        context = "as called in app only context but does not have" if not principal.delegated else "without"
        return core.error(
            403,
            "Forbidden",
            f"Application is not authorized to perform this operation {context} the required permissions. "
            f"Application must have one of the following scopes: {', '.join(sorted(needed))}",
            req,
        )
    global_window = core.global_throttle.window(principal.app_id)
    wait = core.throttle_for(principal.tenant).admit(principal.app_id, is_write=is_write, now=now, also=[global_window])
    if wait > 0:
        core.stats.throttled_total += 1
        core.stats.throttled[principal.tenant.alias] += 1
        return core.error(
            429, "TooManyRequests", "Please retry again later.", req, headers=core.retry_after_header(wait)
        )
    return _status_fault(core, principal, req)


def handle(core: EmulatorCore, principal: Principal, req: SubRequest, now: float) -> SubResponse:
    """Answer one Graph request (authentication already done)."""
    tenant = principal.tenant
    _count(core, principal, req.method in WRITE_METHODS)
    route = resolve(req.path)
    if route is None:
        return _unknown_route(core, req)
    if (refused := _gate(core, principal, req, route, now)) is not None:
        return refused
    if route.kind == "collection":
        return _list(core, principal, req) if req.method == "GET" else _create(core, principal, req)
    entity = tenant.connectors.get(route.object_id.lower())
    if entity is None:
        if core.world.tenant_of_connector(route.object_id) is not None:
            core.stats.cross_tenant_attempts += 1
        return core.error(
            404,
            "ResourceNotFound",
            f"DeviceManagementExchangeConnector with id '{route.object_id}' was not found.",
            req,
        )
    if route.kind == "sync":
        return _sync(core, principal, req, entity)
    if req.method == "GET":
        return _ok(200, _select(entity, req.query))
    if req.method == "DELETE":
        del tenant.connectors[route.object_id.lower()]
        return SubResponse(204)
    return _patch(core, principal, req, entity)


def _ok(status: int, body: Any) -> SubResponse:
    return SubResponse(status, {"Content-Type": "application/json", "OData-Version": "4.0"}, body)


def _select(entity: dict[str, Any], query: Any) -> dict[str, Any]:
    select = query.get("$select")
    if not select:
        return dict(entity)
    wanted = {s.strip() for s in select.split(",")} | {"id", "@odata.type"}
    return {k: v for k, v in entity.items() if k in wanted}


def _list(core: EmulatorCore, principal: Principal, req: SubRequest) -> SubResponse:
    items = list(principal.tenant.connectors.values())
    token = req.query.get("$skiptoken", "")
    try:
        start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode()) if token else 0
    except ValueError:
        return core.error(400, "BadRequest", "The $skiptoken is not valid.", req)
    size = core.options.page_size
    top = req.query.get("$top")
    if top is not None:
        if not top.isdigit() or int(top) < 1:
            return core.error(400, "BadRequest", f"Invalid value '{top}' for $top.", req)
        size = min(size, int(top))
    page = [_select(e, req.query) for e in items[start : start + size]]
    body: dict[str, Any] = {
        "@odata.context": f"{core.base_url}/{req.version}/$metadata#deviceManagement/exchangeConnectors",
        "value": page,
    }
    if start + size < len(items):
        skip = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        extra = f"&$top={top}" if top else ""
        body["@odata.nextLink"] = (
            f"{core.base_url}/{req.version}/deviceManagement/exchangeConnectors?$skiptoken={skip}{extra}"
        )
    return _ok(200, body)


def _validation_error(core: EmulatorCore, req: SubRequest, problems: list[Any]) -> SubResponse:
    return core.error(400, "BadRequest", "; ".join(p.message for p in problems), req)


def _create(core: EmulatorCore, principal: Principal, req: SubRequest) -> SubResponse:
    if (bad := _json_body_problem(core, req)) is not None:
        return bad
    body = dict(req.body)
    body.pop("id", None)  # the key is server-assigned on create
    if problems := validate_patch(EXCHANGE_CONNECTOR, body):
        return _validation_error(core, req, problems)
    entity: dict[str, Any] = {"@odata.type": EXCHANGE_CONNECTOR.odata_type, "id": str(uuid.uuid4())}
    for name in EXCHANGE_CONNECTOR.properties:
        if name != "id":
            entity[name] = body.get(name, "none" if name == "status" else None)
    entity["exchangeConnectorType"] = entity["exchangeConnectorType"] or "onPremises"
    principal.tenant.connectors[entity["id"]] = entity
    response = _ok(201, dict(entity))
    response.headers["Location"] = f"{core.base_url}/{req.version}/deviceManagement/exchangeConnectors/{entity['id']}"
    return response


def _patch(core: EmulatorCore, principal: Principal, req: SubRequest, entity: dict[str, Any]) -> SubResponse:
    if (bad := _json_body_problem(core, req)) is not None:
        return bad
    if problems := validate_patch(EXCHANGE_CONNECTOR, req.body, current_id=entity["id"]):
        return _validation_error(core, req, problems)
    for name, value in req.body.items():
        if name not in ("@odata.type", "id"):
            entity[name] = value
    core.stats.patches[principal.tenant.alias][entity["id"]] += 1
    minimal = "return=minimal" in req.headers.get("prefer", "").lower()
    if core.options.patch_status == 204 or minimal:
        return SubResponse(204)
    return _ok(200, dict(entity))


def _sync(core: EmulatorCore, principal: Principal, req: SubRequest, entity: dict[str, Any]) -> SubResponse:
    if (bad := _json_body_problem(core, req)) is not None:
        return bad
    action = EXCHANGE_CONNECTOR.actions["sync"]
    value = req.body.get(action.parameter, MISSING)
    extra = set(req.body) - {action.parameter}
    if extra:
        return core.error(
            400,
            "BadRequest",
            f"The parameter '{sorted(extra)[0]}' in the request payload is not a "
            "valid parameter for the operation 'sync'.",
            req,
        )
    if value not in action.values:
        return core.error(
            400,
            "BadRequest",
            f"syncType must be one of {', '.join(action.values)}, not {value if value is not MISSING else 'missing'}.",
            req,
        )
    core.stats.syncs[principal.tenant.alias][entity["id"]] += 1
    return SubResponse(204)
