"""Generic handlers over one tenant's store of a collection: list, get, create, PATCH and DELETE.

Every collection is served the same way. Changes are validated with :mod:`bulkconn.registry` (Exchange
Connectors: with the Exchange Connector update page's table, as always) against the object's own concrete type (the stored ``@odata.type``), so abstract collections such as
``deviceConfigurations`` check each object against its real kind. Where the type has them, the service's own
fields follow a change: ``lastModifiedDateTime`` becomes now, and a read-only integer ``version`` (configuration
and compliance policies) goes up by one. Exchange Connectors have neither, so the Exchange Connector update page's example
round-trips exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from msgspec.structs import replace

from bulkconn import registry, resources
from bulkconn.emulator.core import MISSING, EmulatorCore, Principal, SubRequest, SubResponse
from bulkconn.resources import Problem

ODATA_TYPE = "@odata.type"
_CONNECTORS = "exchangeConnectors"


def ok(status: int, body: Any) -> SubResponse:
    """A JSON answer with Graph's OData headers."""
    return SubResponse(status, {"Content-Type": "application/json", "OData-Version": "4.0"}, body)


def now_text() -> str:
    """Now as an Edm.DateTimeOffset with Graph's seven fractional digits."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


def json_body_problem(core: EmulatorCore, req: SubRequest) -> SubResponse | None:
    """The 400 for a missing, mistyped, unparseable or non-object JSON body, or ``None`` when it is fine."""
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


def validation_error(core: EmulatorCore, req: SubRequest, problems: list[Problem]) -> SubResponse:
    """400 ``BadRequest`` naming every problem (each names its property)."""
    return core.error(400, "BadRequest", "; ".join(p.message for p in problems), req)


def problems_of(
    resource: registry.Resource, body: Mapping[str, Any], odata_type: str | None = None, current_id: str | None = None
) -> list[Problem]:
    """Why ``body`` cannot change an object of ``resource`` (empty when it can).

    Exchange Connectors keep the Exchange Connector update page's table (``bulkconn.resources``), exactly as the emulator
    has always checked them (a null ``lastSyncDateTime`` is accepted there, although the metadata says
    non-nullable); every other collection is checked against the registry.
    """
    if resource.name == _CONNECTORS:
        return resources.validate_patch(resources.EXCHANGE_CONNECTOR, body, current_id=current_id)
    return registry.validate_patch(resource, body, odata_type, current_id=current_id)


def select(obj: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """The object, or only the ``$select``-ed properties (with ``id`` and ``@odata.type``)."""
    chosen = query.get("$select")
    if not chosen:
        return dict(obj)
    wanted = {s.strip() for s in chosen.split(",")} | {"id", ODATA_TYPE}
    return {k: v for k, v in obj.items() if k in wanted}


def list_page(core: EmulatorCore, principal: Principal, req: SubRequest, resource: registry.Resource) -> SubResponse:
    """One page of the collection, with an absolute ``@odata.nextLink`` that keeps ``$top`` and ``$select``."""
    items = list(principal.tenant.store(resource.name).values())
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
    root = f"{core.base_url}/{req.version}"
    body: dict[str, Any] = {
        "@odata.context": f"{root}/$metadata#{resource.path}",
        "value": [select(e, req.query) for e in items[start : start + size]],
    }
    if start + size < len(items):
        skip = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        extra = f"&$top={top}" if top else ""
        if chosen := req.query.get("$select"):
            extra += f"&$select={chosen}"
        body["@odata.nextLink"] = f"{root}/{resource.path}?$skiptoken={skip}{extra}"
    return ok(200, body)


def _connector_defaults(resource: registry.Resource, body: dict[str, Any]) -> dict[str, Any]:
    """A created connector shows every documented property, as it always has (status none, on-premises)."""
    out: dict[str, Any] = {name: None for name in resource.entity_type.properties if name != "id"}
    out["status"] = "none"
    out.update(body)
    out["exchangeConnectorType"] = out["exchangeConnectorType"] or "onPremises"
    return out


def _stamp_created(obj: dict[str, Any], kind: registry.StructuredType) -> None:
    now = now_text()
    for name in ("createdDateTime", "lastModifiedDateTime"):
        if name in kind.properties:
            obj[name] = now
    version = kind.properties.get("version")
    if version is not None and version.read_only and version.type.name == "Edm.Int32":
        obj["version"] = 1


def create(core: EmulatorCore, principal: Principal, req: SubRequest, resource: registry.Resource) -> SubResponse:
    """POST to the collection: 201 with the new object (a server-assigned id) and its ``Location``."""
    if (bad := json_body_problem(core, req)) is not None:
        return bad
    body = {k: v for k, v in req.body.items() if k != "id"}  # the key is server-assigned on create
    # A collection without PATCH (Autopilot devices) may still be created: Graph documents a create method for it.
    if problems := problems_of(replace(resource, no_patch=""), body):
        return validation_error(core, req, problems)
    kind = _kind(resource, body.get(ODATA_TYPE))
    fields = {k: v for k, v in body.items() if k != ODATA_TYPE}
    if resource.name == _CONNECTORS:
        fields = _connector_defaults(resource, fields)
    obj: dict[str, Any] = {ODATA_TYPE: kind.odata_type, "id": str(uuid.uuid4())} | fields
    _stamp_created(obj, kind)
    principal.tenant.add(resource.name, obj)
    core.stats.collections[principal.tenant.alias][resource.name].creates += 1
    response = ok(201, dict(obj))
    response.headers["Location"] = f"{core.base_url}/{req.version}/{resource.path}/{obj['id']}"
    return response


def _kind(resource: registry.Resource, named: Any) -> registry.StructuredType:
    """The concrete type an object is (validation already accepted ``named``)."""
    if isinstance(named, str):
        found = registry.structured_type(named.removeprefix("#").removeprefix("microsoft.graph."))
        if found is not None:
            return found
    return resource.entity_type


def touch(obj: dict[str, Any], resource: registry.Resource) -> None:
    """The service's own fields after a change: ``lastModifiedDateTime`` now, a read-only ``version`` + 1."""
    kind = _kind(resource, obj.get(ODATA_TYPE))
    if "lastModifiedDateTime" in kind.properties:
        obj["lastModifiedDateTime"] = now_text()
    version = kind.properties.get("version")
    if version is not None and version.read_only and isinstance(obj.get("version"), int):
        obj["version"] += 1


def patch(
    core: EmulatorCore, principal: Principal, req: SubRequest, resource: registry.Resource, obj: dict[str, Any]
) -> SubResponse:
    """PATCH one object: 200 with the object (Graph's Exchange Connector update page), or 204 when asked for minimal answers."""
    if (bad := json_body_problem(core, req)) is not None:
        return bad
    if problems := problems_of(resource, req.body, obj.get(ODATA_TYPE), obj["id"]):
        return validation_error(core, req, problems)
    for name, value in req.body.items():
        if name not in (ODATA_TYPE, "id"):
            obj[name] = value
    touch(obj, resource)
    alias = principal.tenant.alias
    core.stats.patches[alias][obj["id"]] += 1
    core.stats.collections[alias][resource.name].patches += 1
    minimal = "return=minimal" in req.headers.get("prefer", "").lower()
    if core.options.patch_status == 204 or minimal:
        return SubResponse(204)
    return ok(200, dict(obj))


def delete(core: EmulatorCore, principal: Principal, resource: registry.Resource, obj: dict[str, Any]) -> SubResponse:
    """DELETE one object: 204."""
    del principal.tenant.store(resource.name)[str(obj["id"]).lower()]
    core.stats.collections[principal.tenant.alias][resource.name].deletes += 1
    return SubResponse(204)
