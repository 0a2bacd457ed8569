"""Selector job lines: "every object where ..." instead of a list of ids. Pure: parsing, validation, matching.

A selector line names no ``id``; it selects the objects of a collection, in one tenant or in every configured
tenant (``"tenant": "*"``)::

    {"tenant": "contoso", "select": "all", "patch": {"exchangeAlias": "intune"}}
    {"tenant": "*", "where": {"serverName": "old.contoso.com"}, "patch": {"serverName": "new.contoso.com"}}

``where`` is equality on documented properties, all of which must match (values compared by meaning, see
:mod:`bulkconn.values`). A line is validated like any other before anything is sent: each problem names the
file, the line and the property, with a "did you mean" for a near name. Listing, recording and expanding the
matches into operations is :mod:`bulkconn.expansion`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bulkconn.errors import UsageError
from bulkconn.registry import Kind, Resource, StructuredType, short_type_name, structured_type, suggest, validate_action
from bulkconn.registry import check_value as check_typed
from bulkconn.registry import validate_patch as validate_typed_patch
from bulkconn.targets import resolve_resource
from bulkconn.values import ODATA_TYPE, object_type, property_ref, same_value

ALL_TENANTS = "*"
SELECTOR_FIELDS = frozenset({"tenant", "select", "where", "patch", "action", "syncType", "resource", "key"})
DEFAULT_RESOURCE = "exchangeConnector"
ACTIONS = ("update", "sync")  # what an Operation can carry today


@dataclass(frozen=True, slots=True)
class SelectorProblem:
    """Why a selector line cannot be used: the file, the line, the property (may be empty) and the reason."""

    file: str
    line: int
    key: str
    prop: str  # the field or property at fault (may be empty)
    reason: str

    @property
    def message(self) -> str:
        """As a report's ``invalid`` result says it (``line N: ...``, like every other job line)."""
        return f"line {self.line}: {self.reason}"

    def located(self) -> str:
        """As ``--strict`` and ``validate`` say it (``FILE:LINE: ...``)."""
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A validated selector line: which objects, in which tenants, and what to do to each."""

    line: int
    key: str  # the line's own key, else its number; each match is keyed ``KEY:TENANT:ID``
    tenants: tuple[str, ...]  # "*" already resolved to every configured tenant
    resource: str  # as the job line names it (the engine's name)
    collection: Resource  # the registry's description of that collection
    where: Mapping[str, Any] = field(default_factory=dict)  # empty: every object ("select": "all")
    action: str = "update"
    patch: Mapping[str, Any] = field(default_factory=dict)
    sync_type: str = ""

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether a listed object satisfies every ``where`` property (always, for ``select: all``)."""
        return matches(self.collection, self.where, obj)


def is_selector(data: Mapping[str, Any]) -> bool:
    """Whether a job line is a selector line (it has ``select`` or ``where``)."""
    return "select" in data or "where" in data


def matches(collection: Resource, where: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` has every ``where`` value (``@odata.type`` compares the object's concrete type)."""
    stype = object_type(collection, obj)
    for name, wanted in where.items():
        if name == ODATA_TYPE:
            if short_type_name(str(wanted)) != stype.name:
                return False
        elif not same_value(property_ref(stype, name), obj.get(name), wanted):
            return False
    return True


def select_fields(selectors: Sequence[Selector], *, with_patched: bool) -> tuple[str, ...]:
    """The ``$select`` a listing for these selectors (one collection) needs: ``id``, every ``where`` property,
    and the patched ones too when ``with_patched`` (``plan``, ``--skip-unchanged`` and ``--backup`` read them).

    Empty (no ``$select``: whole objects) when a property belongs to a derived type only: Graph refuses to
    select it on the collection ("Could not find a property named ... on type", microsoftgraph/msgraph-beta-
    sdk-dotnet issue 563).
    """
    names: set[str] = set()
    for selector in selectors:
        names.update(selector.where)
        if with_patched:
            names.update(selector.patch)
    return select_for(selectors[0].collection, names) if selectors else ()


def select_for(collection: Resource, names: Iterable[str]) -> tuple[str, ...]:
    """``id`` and ``names`` (annotations left out), sorted; empty (read whole objects) when one of them is not
    declared on the collection's type (see :func:`select_fields`)."""
    wanted = {n for n in names if not n.startswith("@") and n != "id"}
    declared = collection.entity_type.properties
    if any(n not in declared for n in wanted):
        return ()
    return ("id", *sorted(wanted))


def listing_path(collection: Resource, fields: Sequence[str]) -> str:
    """Relative URL of the first page of a listing (later pages follow ``@odata.nextLink``); no ``fields``: no
    ``$select``.

    Matching is done here, not with ``$filter``: Intune collections support few ``$filter`` forms, and a
    listing's ``$select`` keeps each page small.
    """
    return f"/{collection.path}?$select={','.join(fields)}" if fields else f"/{collection.path}"


class _Checker:
    """Validates one selector line; each check returns a problem or ``None``."""

    def __init__(self, data: Mapping[str, Any], line: int, file: str, key: str) -> None:
        self.data, self.line, self.file, self.key = data, line, file, key

    def problem(self, prop: str, reason: str) -> SelectorProblem:
        return SelectorProblem(self.file, self.line, self.key, prop, reason)

    def fields(self) -> SelectorProblem | None:
        if "id" in self.data:
            return self.problem("id", "a selector line ('select' or 'where') names no 'id'; use one or the other")
        for name in self.data:
            if name not in SELECTOR_FIELDS:
                hint = suggest(name, sorted(SELECTOR_FIELDS))
                return self.problem(name, f"unknown field '{name}' on a selector line{hint}")
        if "select" in self.data and "where" in self.data:
            return self.problem("select", "use either 'select': 'all' or 'where', not both")
        if "select" in self.data and self.data["select"] != "all":
            return self.problem("select", f"'select' can only be \"all\", not {self.data['select']!r}")
        return None

    def tenants(self, configured: Sequence[str], default: str) -> tuple[str, ...] | SelectorProblem:
        tenant = self.data.get("tenant", default)
        if tenant == ALL_TENANTS:
            return tuple(configured)
        if not tenant:
            return self.problem("tenant", "no tenant: set 'tenant' (an alias, or \"*\" for every configured tenant)")
        if not isinstance(tenant, str) or tenant not in configured:
            hint = suggest(str(tenant), list(configured))
            return self.problem("tenant", f"unknown tenant alias '{tenant}'{hint} (or \"*\" for every tenant)")
        return (tenant,)

    def where(self, collection: Resource) -> Mapping[str, Any] | SelectorProblem:
        where = self.data.get("where", {})
        if not isinstance(where, Mapping) or ("where" in self.data and not where):
            return self.problem("where", "'where' must be an object of property: value pairs (all must match)")
        stype = collection.entity_type
        named = where.get(ODATA_TYPE)
        if named is not None:
            concrete = structured_type(short_type_name(str(named)))
            if concrete is None or concrete.name not in collection.entity_type.concrete:
                hint = suggest(f"#microsoft.graph.{short_type_name(str(named))}", _kinds(collection))
                return self.problem(
                    ODATA_TYPE, f"'where.{ODATA_TYPE}' {named!r} is not a kind of {collection.name}{hint}"
                )
            stype = concrete
        for name, value in where.items():
            if name != ODATA_TYPE:
                problem = self._where_value(stype, name, value)
                if problem is not None:
                    return problem
        return where

    def _where_value(self, stype: StructuredType, name: str, value: Any) -> SelectorProblem | None:
        path = f"where.{name}"
        prop = stype.properties.get(name)
        if prop is None:
            hint = suggest(name, list(stype.properties))
            return self.problem(name, f"'{path}': '{name}' is not a property of '{stype.name}'{hint}")
        if prop.type.collection or prop.type.kind in (Kind.COMPLEX, Kind.ENTITY):
            return self.problem(name, f"'{path}': 'where' compares single values; '{name}' is a list or an object")
        problems = check_typed(prop.type, value, path)
        return self.problem(name, problems[0].message) if problems else None


def _kinds(collection: Resource) -> list[str]:
    return [f"#microsoft.graph.{name}" for name in collection.entity_type.concrete]


def _line_key(data: Mapping[str, Any], line: int) -> str | None:
    if "key" not in data:
        return str(line)
    key = data["key"]
    return key if isinstance(key, str) and key and not key.isdigit() else None


def parse_selector(
    data: Mapping[str, Any],
    *,
    line: int,
    file: str,
    tenants: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> Selector | SelectorProblem:
    """Validate a selector line (``is_selector(data)`` is true) against the configuration and the registry.

    ``defaults`` is the job's defaults line (``tenant``, ``patch``, ``action``, ``syncType``, ``resource``);
    the line's own values win, and a ``patch`` merges over the defaults' like any other line.
    """
    defaults = defaults or {}
    key = _line_key(data, line)
    check = _Checker(data, line, file, key or str(line))
    if key is None:
        return check.problem("key", "'key' must be a non-empty string that is not a number (numbers are line keys)")
    only = tenants[0] if len(tenants) == 1 else ""
    found = check.fields() or check.tenants(tenants, str(defaults.get("tenant", only)))
    if isinstance(found, SelectorProblem):
        return found
    name = str(data.get("resource", defaults.get("resource", DEFAULT_RESOURCE)))
    try:
        collection = resolve_resource(name)
    except UsageError as exc:
        return check.problem("resource", str(exc))
    where = check.where(collection)
    if isinstance(where, SelectorProblem):
        return where
    base = Selector(line, check.key, found, name, collection, where)
    return _with_action(check, base, data, defaults)


def _with_action(
    check: _Checker, base: Selector, data: Mapping[str, Any], defaults: Mapping[str, Any]
) -> Selector | SelectorProblem:
    action = data.get("action", defaults.get("action", "update"))
    if action not in ACTIONS:
        return check.problem(
            "action", f"unknown action {action!r}{suggest(str(action), ACTIONS)} (use 'update' or 'sync')"
        )
    if action != "update":
        if "patch" in data:
            return check.problem("patch", f"a '{action}' line takes no 'patch'")
        sync_type = data.get("syncType", defaults.get("syncType"))
        problems = validate_action(base.collection, str(action), {"syncType": sync_type})
        if problems:
            return check.problem(problems[0].property, problems[0].message)
        return replace(base, action=str(action), sync_type=str(sync_type))
    patch = dict(defaults.get("patch", {}))
    if "patch" in data:
        if not isinstance(data["patch"], Mapping):
            return check.problem("patch", "'patch' must be a JSON object")
        patch.update(data["patch"])
    if not patch:
        return check.problem("patch", "empty patch: nothing to change")
    named = base.where.get(ODATA_TYPE)
    problems = validate_typed_patch(base.collection, patch, str(named) if named else None)
    if problems:
        return check.problem(problems[0].property, "; ".join(p.message for p in problems))
    return replace(base, patch=patch)  # validated against the concrete type 'where' names, if it names one


def check_where(where: Mapping[str, Any], *, collection: Resource, source: str) -> Mapping[str, Any] | SelectorProblem:
    """Validate a ``where`` given outside a job line (``bulkconn export --where``), as a selector line's is."""
    return _Checker({"where": where}, 0, source, "").where(collection)
