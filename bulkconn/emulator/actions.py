"""Bound actions: validated against the registry, their documented effect applied, every call recorded.

Effects the Microsoft Graph v1.0 reference documents clearly (each page linked from ``docs/emulator.md``):

- ``windowsAutopilotDeviceIdentities``: ``updateDeviceProperties`` sets the given ``groupTag``, ``displayName``,
  ``userPrincipalName`` and ``addressableUserName``; ``assignUserToDevice`` sets the user; ``unassignUserFromDevice``
  clears it.
- ``managedDevices``: every action is queued on the device as a ``deviceActionResult`` (``pending``), as Intune
  lists it in ``deviceActionResults``; ``retire`` and ``wipe`` also set ``managementState`` to ``retirePending`` /
  ``wipePending``.
- ``deviceEnrollmentConfigurations``: ``setPriority`` sets ``priority``.
- ``importedWindowsAutopilotDeviceIdentities``: ``import`` stores the imported devices.
- Actions that return a collection (``assign``, ``import``) answer 200 with it; every other action 204.

Other actions are accepted and recorded only. Every call counts in the tenant's stats per collection, action and
object (``collections.NAME.actions``); an Exchange Connector ``sync`` also counts in ``syncs``, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bulkconn import registry
from bulkconn.emulator.collection import ODATA_TYPE, json_body_problem, now_text, ok, touch, validation_error
from bulkconn.emulator.core import MISSING, EmulatorCore, Principal, SubRequest, SubResponse
from bulkconn.emulator.routes import Route

Effect = Callable[[dict[str, Any], dict[str, Any]], None]
_AUTOPILOT = "windowsAutopilotDeviceIdentities"
_PENDING_STATE = {"retire": "retirePending", "wipe": "wipePending"}


def _set_params(obj: dict[str, Any], params: dict[str, Any]) -> None:
    obj.update(params)


def _unassign_user(obj: dict[str, Any], params: dict[str, Any]) -> None:
    obj["userPrincipalName"] = ""
    obj["addressableUserName"] = ""


def _queue_device_action(name: str) -> Effect:
    def effect(obj: dict[str, Any], params: dict[str, Any]) -> None:
        now = now_text()
        results = obj.setdefault("deviceActionResults", [])
        results.append({"actionName": name, "actionState": "pending", "startDateTime": now, "lastUpdatedDateTime": now})
        if name in _PENDING_STATE:
            obj["managementState"] = _PENDING_STATE[name]

    return effect


_EFFECTS: dict[tuple[str, str], Effect] = {
    (_AUTOPILOT, "updateDeviceProperties"): _set_params,
    (_AUTOPILOT, "assignUserToDevice"): _set_params,
    (_AUTOPILOT, "unassignUserFromDevice"): _unassign_user,
    ("deviceEnrollmentConfigurations", "setPriority"): _set_params,
}


def _effect(collection: str, action: str) -> Effect | None:
    if collection == "managedDevices":
        return _queue_device_action(action)
    return _EFFECTS.get((collection, action))


def _params(core: EmulatorCore, req: SubRequest, action: registry.Action) -> dict[str, Any] | SubResponse:
    """The action's parameters from the body; an action without parameters may come without a body."""
    if req.body is MISSING and not req.body_invalid and not action.parameters:
        return {}
    if (bad := json_body_problem(core, req)) is not None:
        return bad
    return dict(req.body)


def _returned(
    core: EmulatorCore, principal: Principal, req: SubRequest, action: registry.Action, params: dict[str, Any]
) -> SubResponse:
    """200 with the collection an action returns: the objects it was given, each with an id."""
    given = [item for value in params.values() if isinstance(value, list) for item in value]
    items = [dict(item) | {"id": item.get("id") or str(uuid.uuid4())} for item in given]
    if action.name == "import":
        for item in items:
            item.setdefault(ODATA_TYPE, route_type(action))
            principal.tenant.add("importedWindowsAutopilotDeviceIdentities", dict(item))
    element = (action.returns or "").removeprefix("Collection(").removesuffix(")")
    context = f"{core.base_url}/{req.version}/$metadata#Collection(microsoft.graph.{element})"
    return ok(200, {"@odata.context": context, "value": items})


def route_type(action: registry.Action) -> str:
    """The ``@odata.type`` of the objects an action binds to."""
    return f"#microsoft.graph.{action.bound_to}"


def call_action(
    core: EmulatorCore, principal: Principal, req: SubRequest, route: Route, obj: dict[str, Any] | None
) -> SubResponse:
    """POST a bound action on ``obj`` (``None``: an action bound to the collection)."""
    resource = route.resource
    action = resource.actions.get(route.action)
    if action is None:  # named before the body is read, with the actions that exist
        return validation_error(core, req, registry.validate_action(resource, route.action, {}))
    params = _params(core, req, action)
    if isinstance(params, SubResponse):
        return params
    odata_type = obj.get(ODATA_TYPE) if obj is not None else None
    if problems := registry.validate_action(resource, route.action, params, odata_type=odata_type):
        return validation_error(core, req, problems)
    object_id = str(obj["id"]) if obj is not None else ""
    alias = principal.tenant.alias
    core.stats.collections[alias][resource.name].actions[action.name][object_id] += 1
    if resource.name == "exchangeConnectors" and action.name == "sync":
        core.stats.syncs[alias][object_id] += 1
    effect = _effect(resource.name, action.name)
    if effect is not None and obj is not None:
        effect(obj, params)
        touch(obj, resource)
    if action.returns and action.returns.startswith("Collection("):
        return _returned(core, principal, req, action, params)
    return SubResponse(204)
