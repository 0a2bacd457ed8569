"""One line of a job, checked: a valid :class:`~bulkconn.model.Operation`, or :class:`Invalid` and why.

:class:`LineParser` applies a job's defaults line and the configured tenants to each parsed line (a JSON object,
or the object a CSV row becomes). The scan (:mod:`bulkconn.jobscan`) calls it once per line of a job of any size:
:meth:`LineParser.plain_tenant` decides the common line (a valid plain PATCH) at a glance, and everything else
goes through :meth:`LineParser.parse`, which words every problem with its line number and a "did you mean".
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

import orjson
from msgspec import Struct

from bulkconn.errors import JobError
from bulkconn.model import Operation
from bulkconn.registry import ODATA_TYPE, Resource
from bulkconn.suggest import did_you_mean
from bulkconn.targets import (
    DEFAULT_RESOURCE,
    UPDATE,
    PlainCheck,
    action_problem,
    on_collection,
    operation,
    patch_operation,
    plain_checks,
    resource_problem,
)

LINE_FIELDS = frozenset(
    {"tenant", "id", "patch", "action", "syncType", "resource", "key", "expect", "params", "@odata.type"}
)
DEFAULT_FIELDS = frozenset({"tenant", "patch", "action", "syncType", "resource", "params", "@odata.type"})
# The fields of a plain PATCH line, the one kind the scan checks on its fast path (LineParser.plain_tenant).
PLAIN_FIELDS = frozenset({"tenant", "id", "patch", "resource"})
KEYED_OR_SPECIAL = frozenset({"key", "select", "where", "defaults"})  # lines not keyed by their number alone
_LISTED = 10  # names shown in an "unknown tenant" message; an MSP may configure thousands
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class Invalid(Struct, frozen=True):
    """A line that cannot be sent, and why (the message names the line and the property)."""

    line: int
    key: str
    tenant: str
    object_id: str
    action: str
    message: str

    @classmethod
    def of_line(cls, line: int, message: str) -> Invalid:
        """A line that is wrong before any of its fields can be read."""
        return cls(line, str(line), "", "", "", f"line {line}: {message}")


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - _LISTED} more" if len(ordered) > _LISTED else ""
    return ", ".join(ordered[:_LISTED]) + more


def _id_problem(object_id: Any, collection_bound: bool, action: Any) -> str:
    if collection_bound:
        return f"'{action}' acts on the whole collection: its line names no 'id'" if object_id else ""
    if not object_id:
        return "missing 'id'"
    if not isinstance(object_id, str) or not _ID.match(object_id):
        return f"'id' {orjson.dumps(object_id).decode()} is not a valid object id"
    return ""


class LineParser:
    """Checks job lines against one job's defaults and the configured tenants: a valid operation, or why not."""

    def __init__(self, defaults: dict[str, Any], tenants: Collection[str]) -> None:
        self.defaults = defaults
        self.tenants = frozenset(tenants)  # an MSP may have thousands: membership must be O(1)
        self.only_tenant = next(iter(tenants)) if len(tenants) == 1 else None
        self.default_tenant = str(defaults.get("tenant", self.only_tenant or ""))
        self.default_action = defaults.get("action", "update")
        self.default_resource = defaults.get("resource", DEFAULT_RESOURCE)
        self._resources: dict[str, Resource] = {}  # the (at most 46) collections this job names
        # resource name -> properties whose values are checked at a glance; filled as each name is first resolved.
        self._plain: dict[str, dict[str, PlainCheck]] = {}
        # Defaults that change a PATCH (its base, its type, another action) send every line through parse's full path.
        self._plain_ok = self.default_action == UPDATE and not defaults.get("patch") and ODATA_TYPE not in defaults

    def plain_tenant(self, data: dict[str, Any]) -> str | None:
        """The tenant of a valid plain PATCH line, keyed by its number (the common line), or ``None``.

        ``None`` decides nothing: :meth:`parse` then checks the line in full and words any problem. A line
        passes here only when every check of :meth:`parse` would: its fields, tenant and id, a resource already
        resolved, and a patch whose every value :func:`~bulkconn.targets.plain_checks` knows to be good. The
        scan calls this first on every line: about a third of the cost of :meth:`parse`.
        """
        if not self._plain_ok or not PLAIN_FIELDS.issuperset(data):
            return None
        name = data.get("resource", self.default_resource)
        tenant = data.get("tenant", self.default_tenant)
        object_id = data.get("id")
        patch = data.get("patch")
        checks = self._plain.get(name) if name.__class__ is str else None
        if (
            checks is None
            or tenant.__class__ is not str
            or not tenant
            or tenant not in self.tenants
            or object_id.__class__ is not str
            or patch.__class__ is not dict
            or not patch
            or not _ID.match(object_id)
        ):
            return None
        for prop, value in patch.items():
            check = checks.get(prop)
            if check is None or value.__class__ is not check[0] or (check[1] is not None and value not in check[1]):
                return None
        return tenant

    def plain(self, data: dict[str, Any], line: int, tenant: str) -> Operation:
        """The operation of a line :meth:`plain_tenant` passed (for ``tenant``): what the full path returns for it."""
        name, object_id = data.get("resource", self.default_resource), data["id"]
        return Operation(str(line), line, tenant, name, object_id, UPDATE, data["patch"], "", None, {}, "")

    def unkeyed_tenant(self, data: dict[str, Any]) -> str | None:
        """The configured tenant of a line keyed by its number (no ``key``, not a selector), checking nothing else.

        For a line a report proves valid (:class:`~bulkconn.report.keycodes.LineProof`): it is counted in that
        tenant. ``None`` when it names no configured tenant (the configuration changed): it is then checked in full.
        """
        if not KEYED_OR_SPECIAL.isdisjoint(data):
            return None
        tenant = data.get("tenant", self.default_tenant)
        return tenant if tenant.__class__ is str and tenant and tenant in self.tenants else None

    def parse(self, data: Any, line: int) -> Operation | Invalid:
        if data.__class__ is dict:
            tenant = self.plain_tenant(data)
            if tenant is not None:
                return self.plain(data, line, tenant)
        key = str(line)
        if not isinstance(data, dict):
            return Invalid.of_line(line, "expected a JSON object")
        tenant_raw = data.get("tenant", self.default_tenant)
        tenant = tenant_raw if isinstance(tenant_raw, str) else ""
        object_id = data.get("id", "")
        action_raw = data.get("action", self.default_action)
        if good_key(data.get("key")):
            key = data["key"]
        found = self._line_problem(data, tenant) or self._operation(data, key, line, tenant, object_id, action_raw)
        if isinstance(found, str):
            return Invalid(line, key, tenant, str(object_id), str(action_raw), f"line {line}: {found}")
        return found

    def _operation(
        self, data: dict[str, Any], key: str, line: int, tenant: str, object_id: Any, action: Any
    ) -> Operation | str:
        """The line's operation: its resource, id, action and change, each validated (or the first problem)."""
        name = data.get("resource", self.default_resource)
        resource = (self._resources.get(name) if isinstance(name, str) else None) or self._resource(name)
        patching = action == UPDATE  # the common case skips the action checks
        bound = not patching and not isinstance(resource, str) and on_collection(resource, action)
        problem = _id_problem(object_id, bound, action)
        if isinstance(resource, str):
            return problem or resource
        if problem:
            return problem
        unknown = None if patching else action_problem(resource, action)
        if unknown:
            return unknown
        head = (key, line, tenant, name, str(object_id))
        if patching:
            return patch_operation(resource, data, self.defaults, head)
        return operation(resource, action, data, self.defaults, head)

    def _resource(self, name: Any) -> Resource | str:
        """The resource a line names (looked up once per job and name, then found in ``_resources``), or why not."""
        resolved = resource_problem(name)
        if not isinstance(resolved, str):
            self._resources[name] = resolved  # only known names: a job of garbage names stays small
            self._plain[name] = plain_checks(resolved)
        return resolved

    def _line_problem(self, data: dict[str, Any], tenant: str) -> str | None:
        """What is wrong with the line's key, fields or tenant, if anything."""
        if "key" in data and not good_key(data["key"]):
            return "'key' must be a non-empty string that is not a number (numbers are line keys)"
        if not LINE_FIELDS.issuperset(data):
            unknown = sorted(set(data) - LINE_FIELDS)
            from bulkconn.selectors import SELECTOR_FIELDS  # only to word this error

            known = LINE_FIELDS | SELECTOR_FIELDS  # a misspelt 'where' or 'select' made this a line, not a selector
            hint = did_you_mean(unknown[0], known)
            return f"unknown field '{unknown[0]}'{hint} (known: {', '.join(sorted(known))})"
        if not isinstance(data.get("tenant", ""), str):
            return f"'tenant' must be a tenant alias (a string), not {orjson.dumps(data['tenant']).decode()}"
        if not tenant:
            return "no tenant: set 'tenant' on the line or in the defaults line"
        if tenant not in self.tenants:
            hint = did_you_mean(tenant, self.tenants)
            return f"unknown tenant alias '{tenant}'{hint} (configured: {_listing(self.tenants)})"
        return None


def good_key(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.isdigit()


def read_defaults(data: Any, file: str, line: int) -> dict[str, Any]:
    defaults = data.get("defaults")
    if not isinstance(defaults, dict) or len(data) != 1:
        raise JobError('the defaults line must be {"defaults": {...}} and nothing else', file=file, line=line)
    unknown = sorted(set(defaults) - DEFAULT_FIELDS)
    if unknown:
        raise JobError(
            f"unknown field '{unknown[0]}' in defaults (allowed: {', '.join(sorted(DEFAULT_FIELDS))})",
            file=file,
            line=line,
        )
    for name in ("patch", "params"):
        if name in defaults and not isinstance(defaults[name], dict):
            raise JobError(f"'{name}' in defaults must be a JSON object", file=file, line=line)
    return defaults
