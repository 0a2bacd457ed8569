"""CSV jobs (a spreadsheet's rows) -> the same objects a JSON Lines job's lines parse to.

A row becomes exactly the dict its JSON line would be (``{"tenant", "id", "resource", "action", "syncType",
"@odata.type", "key", "patch": {...}}``, or ``"params": {...}`` on a row that calls an action), so validation,
line numbers and report keys are the JSON Lines ones. See ``docs/job-format.md``: the header names the columns;
an empty cell is not set; ``#null`` is an explicit null (``##null`` is the text ``#null``); a cell's text is typed
by the registry's type of the property it patches or the parameter it passes (true/false, numbers, JSON for lists
and objects, text for the rest).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from bulkconn import registry
from bulkconn.errors import JobError
from bulkconn.registry import ODATA_TYPE, Kind, TypeRef, short_type_name
from bulkconn.suggest import did_you_mean
from bulkconn.targets import DEFAULT_RESOURCE, resource_problem

ROW_FIELDS = ("tenant", "id", "action", "syncType", "key", "resource", ODATA_TYPE)  # columns that are not values
NULL = "#null"
_DELIMITERS = (",", ";", "\t")  # Excel writes ';' where the decimal separator is ','
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGERS = frozenset({"Edm.Byte", "Edm.SByte", "Edm.Int16", "Edm.Int32", "Edm.Int64"})
_NUMBERS = frozenset({"Edm.Double", "Edm.Single", "Edm.Decimal"})


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """What the header row said: the delimiter and each column's name, in order."""

    delimiter: str
    columns: tuple[str, ...]


def sniff_delimiter(header: str) -> str:
    """The delimiter of a header line: the most frequent of ``,`` ``;`` and tab (column names hold none)."""
    return max(_DELIMITERS, key=header.count)


@cache
def _registry_names() -> frozenset[str]:
    """Every property and action parameter name of the registry's collections (a column of a mixed CSV)."""
    names: set[str] = set()
    for collection in registry.collections():
        resource = registry.resource(collection)
        for kind in resource.entity_type.concrete:
            stype = registry.structured_type(kind)
            names.update(stype.properties if stype else ())
        for action in resource.actions.values():
            names.update(action.parameters)
    return frozenset(names)


def read_header(cells: list[str], delimiter: str, file: str, line: int) -> CsvLayout:
    """Check the header row's names against the row fields and the properties and parameters they may set.

    Without a ``resource`` column every row changes Exchange Connectors, and a column is one of their
    properties; with one, a column may be any property or action parameter of a collection (each row is then
    checked against its own resource when it is read).
    """
    columns = tuple(cell.strip() for cell in cells)
    if "resource" in columns:
        allowed: Iterable[str] = _registry_names()
        what = "a property or action parameter of the row's resource (docs/resources.md)"
    else:
        connector = registry.resource("exchangeConnectors").entity_type.properties
        names = [name for name, prop in connector.items() if not prop.read_only]
        allowed, what = names, f"a property of {DEFAULT_RESOURCE} ({', '.join(names)})"
    for name in columns:
        if not name:
            raise JobError("the header row has an empty column name", file=file, line=line)
        if name not in ROW_FIELDS and name not in allowed:
            hint = did_you_mean(name, [*ROW_FIELDS, *allowed])
            raise JobError(
                f"unknown column '{name}'{hint}: a column is one of {', '.join(ROW_FIELDS)} or {what}",
                file=file,
                line=line,
            )
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise JobError(f"column '{duplicates[0]}' appears twice in the header row", file=file, line=line)
    if "id" not in columns:
        raise JobError("the header row has no 'id' column", file=file, line=line)
    return CsvLayout(delimiter, columns)


def _primitive(edm_type: str, text: str) -> Any:
    if edm_type == "Edm.Boolean" and text.casefold() in ("true", "false"):
        return text.casefold() == "true"  # Excel writes TRUE and FALSE
    if edm_type in _INTEGERS and _INTEGER.match(text):
        return int(text)
    if edm_type in _NUMBERS and _NUMBER.match(text):
        return int(text) if _INTEGER.match(text) else float(text)
    return text  # text, dates, GUIDs... (or a cell that is not the right type: validation names it)


def cell_value(ref: TypeRef | None, text: str) -> Any:
    """The JSON value a cell's text stands for when it sets a value declared as ``ref`` (``None``: unknown).

    Text, enums, dates and times, GUIDs: the text itself (a cell with surrounding spaces keeps them, and
    validation then names the value). True/false and numbers: parsed when they read as one (else kept as text,
    for validation to refuse with the property's name). Lists and objects: the cell is JSON.
    """
    if text == NULL:
        return None
    if text.startswith("#") and text.lstrip("#") == "null":
        return text[1:]  # '##null' is the text '#null'
    if ref is None or ref.kind is Kind.ENUM:
        return text
    if ref.collection or ref.kind in (Kind.COMPLEX, Kind.ENTITY):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return _primitive(ref.name, text)


def _value_types(data: Mapping[str, str]) -> Callable[[str], TypeRef | None]:
    """How the row's value columns are declared: properties of its object's type, or its action's parameters."""
    resource = resource_problem(data.get("resource", DEFAULT_RESOURCE))
    if isinstance(resource, str):
        return lambda name: None  # the row is invalid anyway; the parser says why
    action = data.get("action", "update")
    if action != "update":
        found = resource.actions.get(action)
        parameters = found.parameters if found else {}
        return parameters.get
    named = data.get(ODATA_TYPE)
    stype = registry.structured_type(short_type_name(named)) if named else None
    properties = (stype or resource.entity_type).properties

    def declared(name: str) -> TypeRef | None:
        prop = properties.get(name)
        return prop.type if prop else None

    return declared


def row_object(layout: CsvLayout, cells: list[str]) -> dict[str, Any] | str:
    """The JSON Lines object for one data row, or why the row has the wrong shape."""
    if len(cells) != len(layout.columns):
        return f"the row has {len(cells)} cells but the header has {len(layout.columns)} columns"
    data: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for name, text in zip(layout.columns, cells, strict=True):
        if text == "":
            continue
        if name in ROW_FIELDS:
            data[name] = text.strip()
        else:
            texts[name] = text
    if texts:
        declared = _value_types(data)
        values = {name: cell_value(declared(name), text) for name, text in texts.items()}
        data["patch" if data.get("action", "update") == "update" else "params"] = values
    return data


class _Cursor:
    """Feeds csv.reader physical lines and remembers where the record being read started."""

    def __init__(self, lines: Iterable[tuple[int, int, str]]) -> None:
        self._lines = iter(lines)
        self.first: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[str]:
        for number, offset, text in self._lines:
            if self.first is None:
                self.first = (number, offset)
            yield text


def records(lines: Iterable[tuple[int, int, str]], delimiter: str, file: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(line number, byte offset, cells)`` of each CSV record (a quoted cell may span lines).

    Blank lines and rows of empty cells (Excel leaves ``;;;`` rows below a table) are skipped.
    """
    cursor = _Cursor(lines)
    reader = csv.reader(cursor, delimiter=delimiter, strict=True)
    while True:
        cursor.first = None
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number = cursor.first[0] if cursor.first else 0
            raise JobError(f"malformed CSV ({exc})", file=file, line=number) from None
        if cursor.first is not None and any(cells):
            yield cursor.first[0], cursor.first[1], cells
