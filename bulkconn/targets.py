"""What a job line asks for: which collection (:func:`resolve_resource`), and a PATCH or a bound action, validated.

Pure; the data is the generated registry (:mod:`bulkconn.registry`), read on first use. A line names its
collection with ``resource`` (omitted, or the historical ``exchangeConnector``: Exchange Connectors), and either
patches the object (``patch``) or calls one of its bound actions (``"action": NAME, "params": {...}``). The
legacy ``"action": "sync", "syncType": X`` is the action ``sync`` with ``{"syncType": X}``. An abstract collection
(``deviceConfigurations``) needs ``@odata.type``, on the line, in the defaults or in the patch, naming a concrete
type; the patch is validated against that type.

Exchange Connectors keep the Exchange Connector update page's table and messages (:mod:`bulkconn.resources`). Every problem
is returned as a message naming the property or parameter, with a "did you mean" for near misses; the caller adds
the file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bulkconn import registry
from bulkconn.model import Action, Operation
from bulkconn.registry import ODATA_TYPE, Resource, short_type_name
from bulkconn.resources import EXCHANGE_CONNECTOR, Problem, validate_patch
from bulkconn.resources import Kind as SeedKind
from bulkconn.suggest import did_you_mean

DEFAULT_RESOURCE = EXCHANGE_CONNECTOR.name  # what a line without "resource" changes, as jobs always have
CONNECTORS = "exchangeConnectors"
_ALIASES = {EXCHANGE_CONNECTOR.name: CONNECTORS}
UPDATE = Action.UPDATE.value  # a plain str: compared on every line
_LISTED = 10  # action names shown in an "unknown action" message (managed devices have 18)


Head = tuple[str, int, str, str, str]
"""A line's key, line number, tenant, resource (as the line names it) and object id: an Operation's first fields."""

PlainCheck = tuple[type, frozenset[str] | None]
"""How a PATCH value of one property is known good at a glance: its exact class and, for an enum, its members."""


def resolve_resource(name: str) -> Resource:
    """The registry entry for a job line's ``resource``: a ``/deviceManagement`` collection, or ``exchangeConnector``.

    Raises:
        UnknownResourceError: neither (the message suggests the nearest collection).
    """
    return registry.resource(_ALIASES.get(name, name))


def resource_problem(name: Any) -> Resource | str:
    """The resource a line names, or why it names none (with the nearest name, the historical one included)."""
    if isinstance(name, str):
        try:
            return resolve_resource(name)
        except registry.UnknownResourceError:
            pass
    hint = did_you_mean(name, [*_ALIASES, *registry.collections()]) if isinstance(name, str) else ""
    return (
        f"unknown resource {_json(name)}{hint} (a /deviceManagement collection such as deviceCategories, "
        f"or {DEFAULT_RESOURCE}; docs/resources.md lists them)"
    )


def on_collection(resource: Resource, action: Any) -> bool:
    """Whether ``action`` is bound to the whole collection (its line names no ``id``)."""
    found = resource.actions.get(action) if isinstance(action, str) else None
    return found is not None and found.on_collection


def action_problem(resource: Resource, action: Any) -> str | None:
    """Why ``action`` is neither ``update`` nor an action of ``resource``, or ``None``."""
    if action == UPDATE or (isinstance(action, str) and action in resource.actions):
        return None
    choices = [Action.UPDATE.value, *sorted(resource.actions)]
    hint = did_you_mean(action, choices) if isinstance(action, str) else ""
    return f"unknown action {_json(action)}{hint} (use {_either(choices)})"


def operation(
    resource: Resource, action: str, data: Mapping[str, Any], defaults: Mapping[str, Any], head: Head
) -> Operation | str:
    """The validated operation a line asks for (``action`` already checked), or the problem to report."""
    if action == UPDATE:
        return patch_operation(resource, data, defaults, head)
    named = data.get(ODATA_TYPE, defaults.get(ODATA_TYPE))
    if named is not None and not isinstance(named, str):
        return _bad_type(resource, named)
    return _call(resource, resource.actions[action], data, defaults, named, head)


def _bad_type(resource: Resource, named: Any) -> str:
    return f"'{ODATA_TYPE}' must be text like '#microsoft.graph.{resource.entity_type.name}', not {_json(named)}"


def patch_operation(
    resource: Resource, data: Mapping[str, Any], defaults: Mapping[str, Any], head: Head
) -> Operation | str:
    """The validated PATCH a line asks for (what :func:`operation` does for ``update``, one call less per line)."""
    named = data.get(ODATA_TYPE, defaults.get(ODATA_TYPE))
    if named is not None and not isinstance(named, str):
        return _bad_type(resource, named)
    if "params" in data:
        return "an 'update' line takes no 'params' (parameters belong to an action; a PATCH takes 'patch')"
    base = defaults.get("patch")
    if "patch" in data:
        given = data["patch"]
        if not isinstance(given, dict):
            return "'patch' must be a JSON object"
        patch = {**base, **given} if base else given  # the line's own dict: nothing else holds it
    else:
        patch = dict(base) if base else {}
    if not patch:
        return "empty patch: nothing to change"
    problem = _patch_problem(resource, patch, named)
    expect = data.get("expect")
    if not problem and expect is not None:
        problem = _expect_problem(resource, expect, named)
    if problem:
        return problem
    given = patch.get(ODATA_TYPE, named)
    odata_type = f"#microsoft.graph.{short_type_name(given)}" if isinstance(given, str) else ""
    return Operation(*head, UPDATE, patch, "", expect, {}, odata_type)


def plain_checks(resource: Resource) -> dict[str, PlainCheck]:
    """The properties of ``resource`` whose PATCH values are valid by their class alone (enums: and membership).

    For the job scan's fast path: a patch (without ``@odata.type`` or ``expect``, of a concrete type) whose every
    property is here with a value of that exact class (and, for an enum, one of its members) is one that
    :func:`patch_operation` accepts. Anything else (null, a timestamp, a nested object, a flags combination...)
    is not decided here: it goes through :func:`patch_operation`, which words every problem.
    """
    if resource.name == CONNECTORS:
        seed = EXCHANGE_CONNECTOR.properties
        return {
            name: (str, frozenset(prop.enum_values) if prop.kind is SeedKind.ENUM else None)
            for name, prop in seed.items()
            if prop.kind in (SeedKind.STRING, SeedKind.ENUM) and not prop.is_key
        }
    if resource.no_patch or resource.entity_type.abstract:
        return {}
    checks: dict[str, PlainCheck] = {}
    for name, prop in resource.entity_type.properties.items():
        ref = prop.type
        if prop.read_only or ref.collection:
            continue
        if ref.kind is registry.Kind.ENUM:  # a member alone is valid for a flags enum too
            checks[name] = (str, frozenset(registry.enum_members(ref.name)))
        elif ref.kind is registry.Kind.PRIMITIVE and ref.name in _PLAIN_PRIMITIVES:
            checks[name] = (_PLAIN_PRIMITIVES[ref.name], None)
    return checks


_PLAIN_PRIMITIVES: dict[str, type] = {"Edm.String": str, "Edm.Boolean": bool}  # any value of the class is valid


def _patch_problem(resource: Resource, body: dict[str, Any], named: str | None, label: str = "") -> str:
    """Why ``body`` cannot patch an object of ``resource`` (of type ``named``), or an empty string."""
    if resource.name == CONNECTORS:
        problems = validate_patch(EXCHANGE_CONNECTOR, {ODATA_TYPE: named, **body} if named else body)
        return "; ".join(label + _explain(p, body) for p in problems) if problems else ""
    return "; ".join(label + p.message for p in registry.validate_patch(resource, body, named))


def _expect_problem(resource: Resource, expect: Any, named: str | None) -> str:
    """Why an undo line's ``expect`` (the values bulkconn wrote) is unusable, or an empty string."""
    if not isinstance(expect, dict) or not expect:
        return "'expect' must be a JSON object of the values bulkconn wrote (as `bulkconn rollback` makes it)"
    return _patch_problem(resource, expect, named, "'expect': ")


def _params(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any] | str:
    params = dict(defaults.get("params", {}))
    if "params" in data:
        if not isinstance(data["params"], dict):
            return "'params' must be a JSON object of the action's parameters"
        params.update(data["params"])
    return params


def _call(
    resource: Resource,
    action: registry.Action,
    data: Mapping[str, Any],
    defaults: Mapping[str, Any],
    named: str | None,
    head: Head,
) -> Operation | str:
    if "patch" in data or "expect" in data:
        return f"a '{action.name}' line takes no '{'patch' if 'patch' in data else 'expect'}'"
    params = _params(data, defaults)
    if isinstance(params, str):
        return params
    sync_type = data.get("syncType", defaults.get("syncType"))
    if "syncType" in action.parameters:
        if sync_type is not None:
            params.setdefault("syncType", sync_type)
    elif "syncType" in data:
        return f"'syncType' is only for a 'sync'; give the parameters of '{action.name}' in 'params'"
    if resource.name == CONNECTORS and action.name == Action.SYNC:
        problem = _sync_type_problem(params.get("syncType"))
        if problem:
            return problem
    problems = registry.validate_action(resource, action.name, params, odata_type=named)
    if problems:
        return "; ".join(p.message for p in problems)
    sync = str(params["syncType"]) if action.name == Action.SYNC and "syncType" in params else ""
    odata_type = f"#microsoft.graph.{short_type_name(named)}" if named else ""
    return Operation(*head, action.name, {}, sync, None, params, odata_type, action.idempotent)


def _sync_type_problem(sync_type: Any) -> str | None:
    """The Exchange Connector update page's wording for a connector sync without a valid ``syncType``."""
    values = EXCHANGE_CONNECTOR.actions[Action.SYNC].values
    if sync_type is None:
        return f"a 'sync' line needs 'syncType': one of {', '.join(values)}"
    if sync_type not in values:
        hint = did_you_mean(sync_type, values) if isinstance(sync_type, str) else ""
        return f"'syncType' must be one of {', '.join(values)}, not {_json(sync_type)}{hint}"
    return None


def _explain(problem: Problem, patch: Mapping[str, Any]) -> str:
    """A seed-table problem's message, with the property or enum value the user probably meant."""
    prop = EXCHANGE_CONNECTOR.properties.get(problem.property)
    if prop is None and problem.property != ODATA_TYPE:
        return problem.message + did_you_mean(problem.property, EXCHANGE_CONNECTOR.properties)
    value = patch.get(problem.property)
    if prop is not None and prop.enum_values and isinstance(value, str):
        return problem.message + did_you_mean(value, prop.enum_values)
    return problem.message


def _either(choices: list[str]) -> str:
    """``'a' or 'b'``; ``'a', 'b' or 'c'``; long lists end with "and N more"."""
    quoted = [f"'{c}'" for c in choices[:_LISTED]]
    if len(choices) > _LISTED:
        return f"{', '.join(quoted)} and {len(choices) - _LISTED} more"
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
