"""CSV jobs (a spreadsheet's rows) -> the same objects a JSON Lines job's lines parse to.

A row becomes exactly the dict its JSON line would be (``{"tenant", "id", "action", "syncType",
"key", "patch": {...}}``), so validation, line numbers and report keys are the JSON Lines ones. See
``docs/job-format.md``: the header names the columns; an empty cell is not patched; ``#null`` is an
explicit null (``##null`` is the text ``#null``); a cell's text is typed by the property it patches.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bulkconn.errors import JobError
from bulkconn.resources import Kind, Property, Resource
from bulkconn.suggest import did_you_mean

ROW_FIELDS = ("tenant", "id", "action", "syncType", "key")  # columns that are not properties
NULL = "#null"
_DELIMITERS = (",", ";", "\t")  # Excel writes ';' where the decimal separator is ','


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """What the header row said: the delimiter and each column's name, in order."""

    delimiter: str
    columns: tuple[str, ...]


def sniff_delimiter(header: str) -> str:
    """The delimiter of a header line: the most frequent of ``,`` ``;`` and tab (column names hold none)."""
    return max(_DELIMITERS, key=header.count)


def read_header(cells: list[str], delimiter: str, resource: Resource, file: str, line: int) -> CsvLayout:
    """Check the header row's names against the row fields and the resource's properties."""
    columns = tuple(cell.strip() for cell in cells)
    allowed = [*ROW_FIELDS, *(p.name for p in resource.properties.values() if not p.is_key)]
    for name in columns:
        if not name:
            raise JobError("the header row has an empty column name", file=file, line=line)
        if name not in allowed:
            hint = did_you_mean(name, allowed)
            raise JobError(
                f"unknown column '{name}'{hint}: a column is one of {', '.join(ROW_FIELDS)} or a property of "
                f"{resource.name} ({', '.join(allowed[len(ROW_FIELDS) :])})",
                file=file,
                line=line,
            )
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise JobError(f"column '{duplicates[0]}' appears twice in the header row", file=file, line=line)
    if "id" not in columns:
        raise JobError("the header row has no 'id' column", file=file, line=line)
    return CsvLayout(delimiter, columns)


def cell_value(prop: Property, text: str) -> Any:
    """The JSON value a cell's text stands for when it patches ``prop``.

    Every Exchange Connector property is a string, an enum or a DateTimeOffset, all JSON strings, so
    the text itself; a cell with surrounding spaces keeps them (validation then names the value).
    """
    if text == NULL:
        return None
    if text.startswith("#") and text.lstrip("#") == "null":
        return text[1:]  # '##null' is the text '#null'
    if prop.kind in (Kind.STRING, Kind.DATETIME, Kind.ENUM):
        return text
    raise AssertionError(f"no CSV typing for {prop.kind}")  # a new Kind must say how a cell reads


def row_object(layout: CsvLayout, cells: list[str], resource: Resource) -> dict[str, Any] | str:
    """The JSON Lines object for one data row, or why the row has the wrong shape."""
    if len(cells) != len(layout.columns):
        return f"the row has {len(cells)} cells but the header has {len(layout.columns)} columns"
    data: dict[str, Any] = {}
    patch: dict[str, Any] = {}
    for name, text in zip(layout.columns, cells, strict=True):
        if text == "":
            continue
        if name in ROW_FIELDS:
            data[name] = text.strip()
        else:
            patch[name] = cell_value(resource.properties[name], text)
    if patch:
        data["patch"] = patch
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
