"""What a Graph resource looks like, as data, and validation of patches against it.

The Exchange Connector entry is taken from the seed documentation's property table
("Update deviceManagementExchangeConnector"): names, types, enums (with ``unknownFutureValue``)
and DateTimeOffset. Adding another Graph resource is a new :class:`Resource` entry in
:data:`RESOURCES`; neither the job reader, the engine nor the emulator needs new code for it.

This module is pure: no I/O, no event loop. The emulator and the job validator both use it, so
the client refuses exactly what the server would refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any
from urllib.parse import quote


class Kind(StrEnum):
    """The JSON/EDM type of a property."""

    STRING = "String"
    DATETIME = "DateTimeOffset"
    ENUM = "Enum"


# Plain module names: reading an enum member through its class is slow on the per-line hot path.
_ENUM = Kind.ENUM
_DATETIME = Kind.DATETIME


@dataclass(frozen=True, slots=True)
class Property:
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


@dataclass(frozen=True, slots=True)
class BoundAction:
    """A bound action (``POST .../{id}/{name}``) and its single enum parameter; never idempotent (see retry.py)."""

    name: str
    parameter: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resource:
    """A Graph entity set that bulkconn can change."""

    name: str
    odata_type: str
    collection_path: str
    properties: Mapping[str, Property]
    actions: Mapping[str, BoundAction] = field(default_factory=dict)

    def item_path(self, object_id: str) -> str:
        """Relative URL of one object, e.g. ``/deviceManagement/exchangeConnectors/{id}``.

        The id is always exactly one path segment: percent-encoded (``/``, ``?``, ``#``, ``%``, spaces, non-ASCII),
        and ``.``, ``..`` or empty refused (``ValueError``), since no encoding stops a server resolving those.
        The job reader already refuses such ids with file and line; this is the last line of defence.
        """
        if object_id in ("", ".", ".."):
            raise ValueError(f"{object_id!r} is not an object id")
        return f"/{self.collection_path}/{quote(object_id, safe='')}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a patch is not acceptable; ``property`` is empty for whole-body problems."""

    property: str
    message: str


STATUS_VALUES = ("none", "connectionPending", "connected", "disconnected", "unknownFutureValue")
TYPE_VALUES = ("onPremises", "hosted", "serviceToService", "dedicated", "unknownFutureValue")
SYNC_TYPE_VALUES = ("fullSync", "deltaSync")


def _props(*items: Property) -> dict[str, Property]:
    return {p.name: p for p in items}


EXCHANGE_CONNECTOR = Resource(
    name="exchangeConnector",
    odata_type="#microsoft.graph.deviceManagementExchangeConnector",
    collection_path="deviceManagement/exchangeConnectors",
    properties=_props(
        Property("id", Kind.STRING, is_key=True),
        Property("lastSyncDateTime", Kind.DATETIME),
        Property("status", Kind.ENUM, "deviceManagementExchangeConnectorStatus", STATUS_VALUES),
        Property("primarySmtpAddress", Kind.STRING),
        Property("serverName", Kind.STRING),
        Property("connectorServerName", Kind.STRING),
        Property("exchangeConnectorType", Kind.ENUM, "deviceManagementExchangeConnectorType", TYPE_VALUES),
        Property("version", Kind.STRING),
        Property("exchangeAlias", Kind.STRING),
        Property("exchangeOrganization", Kind.STRING),
    ),
    actions={"sync": BoundAction("sync", "syncType", SYNC_TYPE_VALUES)},
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


def validate_patch(resource: Resource, body: Mapping[str, Any], *, current_id: str | None = None) -> list[Problem]:
    """Check a PATCH body against the resource's documented properties.

    ``@odata.type`` may be present and must name the resource. ``id`` is the server-assigned
    key: when ``current_id`` is given (the emulator), an ``id`` equal to it is accepted and any
    other value is refused; when it is ``None`` (a job file), ``id`` is refused outright because
    the object is named by the job line's own ``id``.
    """
    problems: list[Problem] = []
    for name, value in body.items():
        if name == "@odata.type":
            if value != resource.odata_type:
                problems.append(
                    Problem(name, f"'@odata.type' must be '{resource.odata_type}', not {json.dumps(value)}")
                )
            continue
        prop = resource.properties.get(name)
        if prop is None:
            problems.append(Problem(name, f"property '{name}' does not exist on type '{resource.odata_type[1:]}'"))
            continue
        if prop.is_key:
            if current_id is None:
                problems.append(Problem(name, f"'{name}' cannot be changed; name the object with the line's id"))
            elif not isinstance(value, str) or value.lower() != current_id.lower():
                problems.append(Problem(name, f"the key property '{name}' cannot be changed"))
            continue
        reason = check_value(prop, value)
        if reason is not None:
            problems.append(Problem(name, reason))
    return problems
