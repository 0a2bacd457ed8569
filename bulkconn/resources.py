"""The Exchange Connector as Graph's Exchange Connector update page describes it, and validation of patches against that table.

The entry is built from the generated registry's ``exchangeConnectors`` entry (:mod:`bulkconn.registry`: names,
types, enum members and the ``sync`` action, from Graph's published metadata), on first use, so importing this
module reads no data. What Graph's Exchange Connector update page ("Update deviceManagementExchangeConnector") says is kept
exactly: the messages job lines and the emulator have always given, and null accepted for every string and
``DateTimeOffset`` property. The metadata marks ``lastSyncDateTime`` non-nullable; the seed page's table does not,
and jobs that clear it have always been accepted, so the seed table wins for this one resource (the registry, and
the other collections, follow the metadata).

This module is pure: no I/O beyond that first read, no event loop. The emulator and the job validator both use it,
so the client refuses exactly what the server would refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, TypeVar

from msgspec import Struct, field

# Intune's application roles that allow writes (Microsoft Learn, "Intune permissions" in the Graph permissions
# reference). Which one a collection needs differs; the emulator lets any of them write every collection, and
# `auth check` warns when a token holds none of them.
WRITE_ROLES = frozenset(
    {
        "DeviceManagementServiceConfig.ReadWrite.All",
        "DeviceManagementConfiguration.ReadWrite.All",
        "DeviceManagementManagedDevices.ReadWrite.All",
        "DeviceManagementManagedDevices.PrivilegedOperations.All",
    }
)

_V = TypeVar("_V")


class Kind(StrEnum):
    """The JSON/EDM type of a property."""

    STRING = "String"
    DATETIME = "DateTimeOffset"
    ENUM = "Enum"


# Plain module names: reading an enum member through its class is slow on the per-line hot path.
_ENUM = Kind.ENUM
_DATETIME = Kind.DATETIME
_STRING = Kind.STRING


class Property(Struct, frozen=True):
    """One documented property of a resource."""

    name: str
    kind: Kind
    enum_name: str = ""
    enum_values: tuple[str, ...] = ()
    is_key: bool = False

    @property
    def nullable(self) -> bool:
        # Enums in Intune are non-nullable value types; strings and timestamps accept null.
        return self.kind is not _ENUM and not self.is_key


class BoundAction(Struct, frozen=True):
    """A bound action (``POST .../{id}/{name}``) and its single enum parameter; never idempotent (see retry.py)."""

    name: str
    parameter: str
    values: tuple[str, ...]


class Resource(Struct, frozen=True):
    """A Graph entity set that bulkconn can change."""

    name: str
    odata_type: str
    collection_path: str
    properties: Mapping[str, Property]
    actions: Mapping[str, BoundAction] = field(default_factory=dict)


class Problem(Struct, frozen=True):
    """One reason a patch is not acceptable; ``property`` is empty for whole-body problems."""

    property: str
    message: str


_COLLECTION = "exchangeConnectors"


class _Lazy(Mapping[str, _V]):
    """A read-only mapping built on first use (so that importing this module reads no data)."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[], dict[str, _V]]) -> None:
        self._build = build
        self._built: dict[str, _V] | None = None

    def resolved(self) -> dict[str, _V]:
        """The built mapping (built now if it was not yet)."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getitem__(self, key: str) -> _V:
        return self.resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolved())

    def __len__(self) -> int:
        return len(self.resolved())

    def __contains__(self, key: object) -> bool:
        return key in self.resolved()


def _seed_properties() -> dict[str, Property]:
    from bulkconn import registry  # registry imports this module: read its data here, on first use

    props: dict[str, Property] = {}
    for name, prop in registry.resource(_COLLECTION).entity_type.properties.items():
        ref, key = prop.type, bool(prop.read_only)  # only the key is protected for this resource
        if ref.kind is registry.Kind.ENUM:
            props[name] = Property(name, Kind.ENUM, ref.name, registry.enum_members(ref.name), is_key=key)
        else:
            props[name] = Property(name, _SEED_KINDS[ref.name], is_key=key)  # a new type must say how it reads
    return props


def _seed_actions() -> dict[str, BoundAction]:
    from bulkconn import registry

    actions: dict[str, BoundAction] = {}
    for name, action in registry.resource(_COLLECTION).actions.items():
        ((parameter, ref),) = action.parameters.items()  # sync: one enum parameter, syncType
        actions[name] = BoundAction(name, parameter, registry.enum_members(ref.name))
    return actions


_SEED_KINDS = {"Edm.String": Kind.STRING, "Edm.DateTimeOffset": Kind.DATETIME}

EXCHANGE_CONNECTOR = Resource(
    name="exchangeConnector",
    odata_type="#microsoft.graph.deviceManagementExchangeConnector",
    collection_path=f"deviceManagement/{_COLLECTION}",
    properties=_Lazy(_seed_properties),
    actions=_Lazy(_seed_actions),
)

RESOURCES: Mapping[str, Resource] = {EXCHANGE_CONNECTOR.name: EXCHANGE_CONNECTOR}

# Edm.DateTimeOffset: an ISO 8601 timestamp with an offset; Graph emits up to 7 fractional digits.
_DTO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})$",
    re.IGNORECASE,
)


def parse_datetime_offset(value: str) -> datetime | None:
    """Parse an Edm.DateTimeOffset; ``None`` when it is not one (no offset, bad date, ...)."""
    match = _DTO.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset.upper() == "Z":
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 14 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        return None


def _type_name(value: Any) -> str:
    """What a JSON value is, as a sentence says it ("must be a string, not a number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_value(prop: Property, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for ``prop``, or ``None`` when it is."""
    if value is None:
        return None if prop.nullable else f"property '{prop.name}' cannot be null"
    if not isinstance(value, str):
        expected = {_ENUM: "an enum string", _DATETIME: "a DateTimeOffset string"}.get(prop.kind, "a string")
        return f"property '{prop.name}' must be {expected}, not {_type_name(value)}"
    if prop.kind is _ENUM and value not in prop.enum_values:
        allowed = ", ".join(prop.enum_values)
        return f"property '{prop.name}' has invalid {prop.enum_name} value '{value}' (allowed: {allowed})"
    if prop.kind is _DATETIME and parse_datetime_offset(value) is None:
        return (
            f"property '{prop.name}' value '{value}' is not a DateTimeOffset "
            "(expected e.g. 2017-01-01T00:02:49.3205976-08:00)"
        )
    return None


def _property_problem(
    resource: Resource, name: str, value: Any, prop: Property | None, current_id: str | None
) -> Problem | None:
    """What is wrong with one property of a PATCH body (see :func:`validate_patch`), if anything."""
    if name == "@odata.type":
        if value != resource.odata_type:
            return Problem(name, f"'@odata.type' must be '{resource.odata_type}', not {json.dumps(value)}")
        return None
    if prop is None:
        return Problem(name, f"property '{name}' does not exist on type '{resource.odata_type[1:]}'")
    if prop.is_key:
        if current_id is None:
            return Problem(name, f"'{name}' cannot be changed; name the object with the line's id")
        if not isinstance(value, str) or value.lower() != current_id.lower():
            return Problem(name, f"the key property '{name}' cannot be changed")
        return None
    reason = check_value(prop, value)
    return None if reason is None else Problem(name, reason)


def validate_patch(resource: Resource, body: Mapping[str, Any], *, current_id: str | None = None) -> list[Problem]:
    """Check a PATCH body against the resource's documented properties.

    ``@odata.type`` may be present and must name the resource. ``id`` is the server-assigned
    key: when ``current_id`` is given (the emulator), an ``id`` equal to it is accepted and any
    other value is refused; when it is ``None`` (a job file), ``id`` is refused outright because
    the object is named by the job line's own ``id``.
    """
    problems: list[Problem] = []
    properties = resource.properties
    if isinstance(properties, _Lazy):  # plain dict lookups for each property of each line
        properties = properties.resolved()
    for name, value in body.items():
        prop = properties.get(name)
        if prop is not None and value.__class__ is str and prop.kind is _STRING and not prop.is_key:
            continue  # the common case, checked inline: a job validates millions of these
        problem = _property_problem(resource, name, value, prop, current_id)
        if problem is not None:
            problems.append(problem)
    return problems
