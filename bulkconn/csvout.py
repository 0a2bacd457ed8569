"""Job lines -> a CSV job that :mod:`bulkconn.jobcsv` reads back as the same operations (``export --format csv``).

The file is what Excel opens as "CSV UTF-8": a byte-order mark, commas, CRLF line ends. Columns: the row fields
the lines use (``tenant``, ``id``, ``resource``, ``@odata.type``), then one per property any line patches: those
of the exported collection's declared type in metadata order, then the others (a subtype's own) by name, so the
order does not depend on the order Graph lists the objects in. A value is written as :func:`jobcsv.cell_value`
reads it (``#null`` for null, an extra ``#`` before a text such as ``#null``, JSON for lists and objects), and
every row is read back before it is kept: a value no cell can hold (an empty text: an empty cell means "not
set") is refused with the object and property named, never written differently.

No prefix against formula injection (a ``'`` before ``=``, ``+``, ``-``, ``@``, as ``report show --format csv``
writes): this file is a job, and the reader keeps every character of a text cell, so a prefix would become part
of the value written back (docs/job-format.md).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import orjson

from bulkconn.errors import UsageError
from bulkconn.jobcsv import NULL, CsvLayout, row_object
from bulkconn.values import ODATA_TYPE

BOM = "\ufeff"
_ROW_FIELDS = ("tenant", "id", "resource", ODATA_TYPE)  # the row fields an export line may carry, in column order


class CsvExportError(UsageError):
    """A value that a CSV cell cannot hold as it is (names the object and the property)."""


def cell_text(value: Any) -> str:
    """The cell text :func:`bulkconn.jobcsv.cell_value` reads as ``value`` (checked by the caller)."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return "#" + value if value.startswith("#") and value.lstrip("#") == "null" else value
    return orjson.dumps(value).decode()  # true/false, numbers, lists and objects


def _flat(line: Mapping[str, Any]) -> dict[str, Any]:
    """The export line as one CSV row carries it: its row fields, then its patch's properties."""
    return {**{name: line[name] for name in _ROW_FIELDS if name in line}, **line.get("patch", {})}


def _refuse(row: Mapping[str, Any], name: str, why: str) -> CsvExportError:
    where = f"tenant {row.get('tenant', '?')}, object {row.get('id', '?')}"
    return CsvExportError(f"{where}: '{name}' {why}; export it with --format jsonl instead")


def _same(a: Any, b: Any) -> bool:
    return orjson.dumps(a) == orjson.dumps(b)  # strict: 1 is not true, 5 is not 5.0


def row_cells(line: Mapping[str, Any]) -> dict[str, str]:
    """``column -> cell text`` of one export line, after reading the row back as the CSV job reader will.

    Raises:
        CsvExportError: a value that no cell reads back as itself (an empty text, a value of the wrong type).
    """
    row = _flat(line)
    cells: dict[str, str] = {}
    for name, value in row.items():
        if value == "":
            raise _refuse(row, name, "is an empty text, which CSV cannot hold (an empty cell means 'not set')")
        cells[name] = value if name in _ROW_FIELDS and isinstance(value, str) else cell_text(value)
    layout = CsvLayout(",", tuple(cells))
    back = row_object(layout, list(cells.values()))
    assert isinstance(back, dict)  # a row of as many cells as columns always reads
    read = {**back.get("patch", {}), **{name: back[name] for name in _ROW_FIELDS if name in back}}
    for name, value in row.items():
        if name not in read or not _same(read[name], value):
            raise _refuse(row, name, f"holds {orjson.dumps(value).decode()}, which a CSV cell cannot hold as it is")
    return cells


class CsvJobWriter:
    """Collects export lines (spooled to a temporary file, not held in memory) and writes them as one CSV job.

    The header needs every column of every row, so nothing is written before :meth:`write`.
    """

    def __init__(self, *, leading: Sequence[str]) -> None:
        """``leading``: property columns that come first, in this order (the collection's declared properties)."""
        self._leading = {name: index for index, name in enumerate(leading)}
        self._columns: dict[str, None] = {}
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by write() or close())

    def add(self, line: Mapping[str, Any]) -> None:
        """Check one export line and keep its cells (raises :class:`CsvExportError`, see :func:`row_cells`)."""
        cells = row_cells(line)
        self._columns.update(dict.fromkeys(cells))
        self._spool.write(orjson.dumps(cells) + b"\n")

    def columns(self) -> list[str]:
        """The header: the row fields in their fixed order, then the properties (leading ones first, then by name)."""
        fields = [name for name in _ROW_FIELDS if name in self._columns]
        rest = [name for name in self._columns if name not in _ROW_FIELDS]
        rest.sort(key=lambda name: (self._leading.get(name, len(self._leading)), name))
        return fields + rest

    def write(self, sink: BinaryIO) -> None:
        """Write the BOM, the header and every row (CRLF line ends), then drop the spool."""
        columns = self.columns()
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        try:
            text.write(BOM)
            writer = csv.writer(text, lineterminator="\r\n")
            writer.writerow(columns)
            self._spool.seek(0)
            for raw in self._spool:
                cells = orjson.loads(raw)
                writer.writerow([cells.get(name, "") for name in columns])
            text.flush()
        finally:
            text.detach()  # the sink belongs to the caller (stdout stays open)
            self.close()

    def close(self) -> None:
        """Drop the spool (also when the export stopped half way)."""
        self._spool.close()

    def __enter__(self) -> CsvJobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
