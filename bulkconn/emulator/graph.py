"""The Graph resource routes: every ``/deviceManagement`` collection, its objects and their bound actions.

:func:`handle` answers one :class:`SubRequest` for an authenticated :class:`Principal`. It is used
for direct HTTP requests and for every sub-request of a ``$batch`` alike, so both are evaluated
the same way, throttling included: one tenant's windows count requests to every collection together.
Objects are served generically from the tenant's stores (:mod:`bulkconn.emulator.state`) and validated
with :mod:`bulkconn.registry`, the same validation a job goes through before anything is sent.
"""

from __future__ import annotations

from typing import Any

from bulkconn.emulator import collection
from bulkconn.emulator.actions import call_action
from bulkconn.emulator.core import EmulatorCore, Principal, SubRequest, SubResponse
from bulkconn.emulator.routes import Kind, Route, resolve
from bulkconn.emulator.state import READ_ROLES
from bulkconn.resources import WRITE_ROLES

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
    if not route.allows(req.method):
        reason = f" {route.resource.no_patch}." if route.resource.no_patch and req.method == "PATCH" else ""
        return core.error(
            405, "Request_BadRequest", f"Specified HTTP method is not allowed for the request target.{reason}", req
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
    if core.options.throttling:
        global_window = core.global_throttle.window(principal.app_id)
        throttle = core.throttle_for(principal.tenant)
        wait = throttle.admit(principal.app_id, is_write=is_write, now=now, also=[global_window])
    else:
        wait = 0.0
    if wait > 0:
        core.stats.throttled_total += 1
        core.stats.throttled[principal.tenant.alias] += 1
        return core.error(
            429, "TooManyRequests", "Please retry again later.", req, headers=core.retry_after_header(wait)
        )
    return _status_fault(core, principal, req)


def handle(core: EmulatorCore, principal: Principal, req: SubRequest, now: float) -> SubResponse:
    """Answer one Graph request (authentication already done)."""
    is_write = req.method in WRITE_METHODS
    _count(core, principal, is_write)
    route = resolve(req.path, req.method)
    if route is None:
        return _unknown_route(core, req)
    if is_write:
        core.stats.collections[principal.tenant.alias][route.resource.name].writes += 1
    if (refused := _gate(core, principal, req, route, now)) is not None:
        return refused
    if route.kind is Kind.COLLECTION:
        if req.method == "GET":
            return collection.list_page(core, principal, req, route.resource)
        return collection.create(core, principal, req, route.resource)
    if route.kind is Kind.COLLECTION_ACTION:
        return call_action(core, principal, req, route, None)
    obj = principal.tenant.store(route.resource.name).get(route.object_id.lower())
    if obj is None:
        return _not_found(core, req, route)
    if route.kind is Kind.ACTION:
        return call_action(core, principal, req, route, obj)
    return _on_item(core, principal, req, route, obj)


def _on_item(
    core: EmulatorCore, principal: Principal, req: SubRequest, route: Route, obj: dict[str, Any]
) -> SubResponse:
    """GET, DELETE or PATCH of one existing object."""
    if req.method == "GET":
        return collection.ok(200, collection.select(obj, req.query))
    if req.method == "DELETE":
        return collection.delete(core, principal, route.resource, obj)
    return collection.patch(core, principal, req, route.resource, obj)


def _not_found(core: EmulatorCore, req: SubRequest, route: Route) -> SubResponse:
    if core.world.tenant_of(route.resource.name, route.object_id) is not None:
        core.stats.cross_tenant_attempts += 1
    type_name = route.resource.entity_type.name
    return core.error(
        404,
        "ResourceNotFound",
        f"{type_name[:1].upper()}{type_name[1:]} with id '{route.object_id}' was not found.",
        req,
    )
