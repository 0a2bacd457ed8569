"""Checks for OData primitive (``Edm.*``) values in Graph's JSON format, with reasons in plain words.

Pure and allocation-light: :func:`check_primitive` returns ``None`` for a good value, otherwise the end of a
sentence that starts with the property's name ("must be text, not a number"). Formats follow OData JSON
Format v4.01 section 7.1 (primitive values) and the ISO 8601 forms Graph emits.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from typing import Any

from bulkconn.resources import parse_datetime_offset

# The text formats, compiled on first use (:func:`_pattern`): most jobs hold no GUID, date, time, duration or bytes.
_FORMATS = {
    "Edm.Guid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    "Edm.Date": r"^(\d{4})-(\d{2})-(\d{2})$",
    "Edm.TimeOfDay": r"^([01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,12})?)?$",
    "Edm.Duration": r"^-?P(?=\d|T\d)(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$",
    # OData sends Edm.Binary as base64url; Graph also accepts the standard alphabet. Padding is optional.
    "Edm.Binary": r"^[A-Za-z0-9+/_-]*={0,2}$",
}
_SPECIAL_FLOATS = frozenset({"NaN", "INF", "-INF"})

_INT_RANGES = {
    "Edm.Byte": (0, 255),
    "Edm.SByte": (-128, 127),
    "Edm.Int16": (-(2**15), 2**15 - 1),
    "Edm.Int32": (-(2**31), 2**31 - 1),
    "Edm.Int64": (-(2**63), 2**63 - 1),
}
_FLOATS = frozenset({"Edm.Double", "Edm.Single", "Edm.Decimal"})

_EXPECTED = {
    "Edm.String": "text",
    "Edm.Boolean": "true or false",
    "Edm.DateTimeOffset": "a date and time with an offset, like 2017-01-01T00:02:49.3205976-08:00",
    "Edm.Date": "a date like 2024-02-19",
    "Edm.TimeOfDay": "a time of day like 13:45:00",
    "Edm.Duration": "a duration like PT1H30M (ISO 8601)",
    "Edm.Guid": "a GUID like 0f8fad5b-d9cb-469f-a165-70867728950e",
    "Edm.Binary": "base64-encoded bytes",
}


def describe(value: Any) -> str:
    """What a JSON value is, in words ("a number", "text", "a list", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def expected(edm_type: str) -> str:
    """What a value of ``edm_type`` looks like, in words."""
    if edm_type in _INT_RANGES:
        return "a whole number"
    if edm_type in _FLOATS:
        return "a number"
    return _EXPECTED.get(edm_type, edm_type)


def _check_int(edm_type: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a whole number, not {describe(value)}"
    if isinstance(value, float) and not value.is_integer():
        return f"must be a whole number, not {value!r}"
    low, high = _INT_RANGES[edm_type]
    if not low <= value <= high:
        return f"must be a whole number from {low} to {high}; {int(value)} is out of range"
    return None


def _check_float(value: Any) -> str | None:
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {describe(value)}"
    return None


@cache
def _pattern(edm_type: str) -> re.Pattern[str]:
    return re.compile(_FORMATS[edm_type])


def _valid_text(edm_type: str, value: str) -> bool:
    if edm_type == "Edm.DateTimeOffset":
        return parse_datetime_offset(value) is not None
    if edm_type == "Edm.Guid":
        return _pattern(edm_type).match(value) is not None
    if edm_type == "Edm.Date":
        match = _pattern(edm_type).match(value)
        if match is None:
            return False
        try:
            date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            return False
        return True
    if edm_type in ("Edm.TimeOfDay", "Edm.Duration"):
        return _pattern(edm_type).match(value) is not None
    if edm_type == "Edm.Binary":
        return _pattern(edm_type).match(value) is not None and len(value.rstrip("=")) % 4 != 1
    return True


def check_primitive(edm_type: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``edm_type`` (never ``None`` input: nullability is the caller's), or ``None``."""
    if edm_type == "Edm.Untyped":
        return None
    if edm_type in _INT_RANGES:
        return _check_int(edm_type, value)
    if edm_type in _FLOATS:
        return _check_float(value)
    if edm_type == "Edm.Boolean":
        return None if isinstance(value, bool) else f"must be true or false, not {describe(value)}"
    if edm_type == "Edm.Stream":
        return "is a file stream; it cannot be set in a JSON body"
    if not isinstance(value, str):
        return f"must be {expected(edm_type)}, not {describe(value)}"
    if not _valid_text(edm_type, value):
        return f"must be {expected(edm_type)}; {value!r} is not"
    return None
