"""Graph JSON values compared by meaning, and the per-property difference between an object and a patch.

Pure, no I/O. Used wherever bulkconn asks "is this already the value?": selector ``where`` matching, ``plan``
diffs, ``--skip-unchanged``, and the conflict check of an undo job. The rules, per the property's declared type
(from :mod:`bulkconn.registry`):

- ``Edm.DateTimeOffset``: the same instant, to Graph's 100 ns precision, whatever the offset
  (``2026-01-01T10:00:00Z`` equals ``2026-01-01T11:00:00+01:00``).
- ``Edm.Guid``: case-insensitive. ``Edm.Boolean`` is never equal to a number (``true`` is not ``1``).
- enums: member names exactly as Graph returns them; a flags value compares as a set (``a,b`` equals ``b, a``).
- ``null`` and a property the answer omits are the same (OData JSON lets a service omit nulls:
  the ``omit-values=nulls`` preference of OData v4.01, Part 1: Protocol, "Preference omit-values").
- nested objects compare property by property (omitted = null, so a patch that leaves a nested property out
  only matches when it is null); lists compare element by element, in order.

Anything else compares as plain JSON. When in doubt the answer is "different": a needless write costs one
request, a wrong "already the value" would silently drop a change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulkconn.registry import Kind, Resource, StructuredType, TypeRef, short_type_name, structured_type
from bulkconn.resources import parse_datetime_offset

ODATA_TYPE = "@odata.type"
_FRACTION = re.compile(r"\.(\d{1,7})")


@dataclass(frozen=True, slots=True)
class Change:
    """One property whose current value differs from the wanted one."""

    property: str
    old: Any
    new: Any


def object_type(resource: Resource, obj: Mapping[str, Any] | None) -> StructuredType:
    """The type an object of ``resource`` really is: its ``@odata.type`` when known, else the declared one."""
    named = obj.get(ODATA_TYPE) if obj is not None else None
    if isinstance(named, str):
        found = structured_type(short_type_name(named))
        if found is not None:
            return found
    return resource.entity_type


def render(value: Any) -> str:
    """A value as JSON text, so that ``"null"`` (text) and ``null`` read differently."""
    return orjson.dumps(value).decode()


def _instant(value: str) -> tuple[float, int] | None:
    parsed = parse_datetime_offset(value)
    if parsed is None:
        return None
    fraction = _FRACTION.search(value)
    ticks = int(fraction.group(1).ljust(7, "0")) if fraction else 0  # 100 ns units: Graph sends 7 digits
    return parsed.replace(microsecond=0).timestamp(), ticks


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _same_primitive(edm_type: str, a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        if edm_type == "Edm.DateTimeOffset":
            left, right = _instant(a), _instant(b)
            if left is not None and right is not None:
                return left == right
        elif edm_type == "Edm.Guid":
            return a.lower() == b.lower()
    return _same_json(a, b)


def _same_enum(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        # A non-flags member never holds a comma, so splitting is harmless for plain enums.
        return {p.strip() for p in a.split(",")} == {p.strip() for p in b.split(",")}
    return _same_json(a, b)


def _same_object(declared: str, a: Any, b: Any) -> bool:
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return _same_json(a, b)
    if (
        ODATA_TYPE in a
        and ODATA_TYPE in b
        and short_type_name(str(a[ODATA_TYPE])) != short_type_name(str(b[ODATA_TYPE]))
    ):
        return False
    named = b.get(ODATA_TYPE, a.get(ODATA_TYPE))
    stype = structured_type(short_type_name(str(named))) if named else None
    stype = stype or structured_type(declared)
    for name in set(a) | set(b):
        if name.startswith("@") or "@odata." in name:
            continue  # annotations are not values
        ref = stype.properties[name].type if stype and name in stype.properties else None
        if not same_value(ref, a.get(name), b.get(name)):
            return False
    return True


def same_value(ref: TypeRef | None, current: Any, wanted: Any) -> bool:
    """Whether ``current`` (as Graph returned it) already is ``wanted``, for a property declared as ``ref``.

    ``ref`` is ``None`` for a property the metadata does not describe (an open type): plain JSON equality.
    """
    if current is None or wanted is None:
        return current is None and wanted is None
    if ref is None:
        return _same_json(current, wanted)
    if ref.collection:
        if not (isinstance(current, list) and isinstance(wanted, list)) or len(current) != len(wanted):
            return False
        element = TypeRef(ref.name, ref.kind, collection=False, nullable=ref.nullable)
        return all(same_value(element, c, w) for c, w in zip(current, wanted, strict=True))
    if ref.kind is Kind.PRIMITIVE:
        return _same_primitive(ref.name, current, wanted)
    if ref.kind is Kind.ENUM:
        return _same_enum(current, wanted)
    return _same_object(ref.name, current, wanted)


def property_ref(stype: StructuredType, name: str) -> TypeRef | None:
    """The declared type of ``name`` on ``stype``, or ``None`` when the metadata does not describe it."""
    prop = stype.properties.get(name)
    return prop.type if prop is not None else None


def diff(resource: Resource, current: Mapping[str, Any], patch: Mapping[str, Any]) -> tuple[Change, ...]:
    """The properties of ``patch`` whose value ``current`` does not already have, in the patch's order.

    ``@odata.type`` and other annotations in the patch are not properties and never count as a change.
    """
    stype = object_type(resource, current)
    return tuple(
        Change(name, current.get(name), wanted)
        for name, wanted in patch.items()
        if not name.startswith("@") and not same_value(property_ref(stype, name), current.get(name), wanted)
    )
