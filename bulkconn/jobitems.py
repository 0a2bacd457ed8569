"""A job file's lines as ``(line, offset, parsed object or Invalid)``: JSON Lines (UTF-8 or UTF-16) or CSV rows.

What the scan (:mod:`bulkconn.jobscan`) checks, line by line: a line that cannot be read becomes an
:class:`~bulkconn.jobline.Invalid` with the parser's complaint placed in the file's own line; a line longer than
:data:`~bulkconn.jobfile.MAX_LINE_BYTES` is refused here, and by the lane reader (:func:`bounded`) too.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from bulkconn.errors import JobError
from bulkconn.jobfile import MAX_LINE_BYTES, LineStream
from bulkconn.jobline import Invalid

if TYPE_CHECKING:  # the scan's types only: the scan imports this module
    from bulkconn.jobscan import JobScan, Unparsed


def jsonl_items(stream: LineStream, unparsed: Unparsed | None = None) -> Iterator[tuple[int, int, Any]]:
    """``(line, offset, parsed object or Invalid)`` for every non-blank JSON line, but those ``unparsed`` counts."""
    if not stream.encoding.utf8:
        yield from _wide_jsonl_items(stream)
        return
    loads, problem = orjson.loads, orjson.JSONDecodeError
    codes, proven, tenants, usable, counted = (
        (unparsed.codes, unparsed.proven, unparsed.tenants, unparsed.usable, unparsed.counted)
        if unparsed is not None
        else (bytearray(), bytes(256), array("H"), b"", [])
    )
    upto = 0  # until the first readable line (it may be the defaults, which decide how the rest read), none is proven
    for number, offset, content in stream.contents():
        if number < upto and proven[codes[number]] and usable[index := tenants[number]]:
            counted[index] += 1
            continue
        if content is None:
            yield number, offset, _too_long(stream, number)
            continue
        try:
            data = loads(content)
        except problem as exc:
            if content.strip():
                yield number, offset, _malformed(stream, number, content, exc)
            continue
        yield number, offset, data
        upto = len(codes)


def _malformed(stream: LineStream, number: int, content: bytes, exc: orjson.JSONDecodeError) -> Invalid:
    """A UTF-8 line that is not JSON; bytes that are not UTF-8 stop the job with one message instead."""
    stream.text(content, number)
    # The parser places its complaint by the line's own newline (see _json_problem): ask about the line as read.
    whole = content if stream.unterminated and number == stream.lines else content + b"\n"
    try:
        orjson.loads(whole)
    except orjson.JSONDecodeError as again:
        exc = again
    return Invalid.of_line(number, f"malformed JSON ({_json_problem(exc)})")


def _wide_jsonl_items(stream: LineStream) -> Iterator[tuple[int, int, Any]]:
    """:func:`jsonl_items` of a UTF-16 file: each line decoded to text first."""
    for number, offset, raw in stream:
        if raw is None:
            yield number, offset, _too_long(stream, number)
            continue
        content = stream.text(raw, number)
        if not content.strip():
            continue
        try:
            yield number, offset, orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            yield number, offset, Invalid.of_line(number, f"malformed JSON ({_json_problem(exc)})")


def _too_long(stream: LineStream, number: int) -> Invalid:
    message = f"too long ({stream.last_size} bytes; a line holds one operation, at most {MAX_LINE_BYTES} bytes)"
    return Invalid.of_line(number, message)


def _json_problem(exc: orjson.JSONDecodeError) -> str:
    """The parser's complaint, placed in the file's own line (the parser counts its newline as a line 2)."""
    if exc.lineno > 1 or exc.msg.startswith("unexpected end of data"):
        return f"{exc.msg} at the end of the line: is a }} or ] missing?"
    return f"{exc.msg} at column {exc.colno}"


def bounded(raw: bytes | None, number: int, file: str) -> bytes:
    if raw is None:  # a spreadsheet row cannot be skipped alone: a quoted cell may continue on the next line
        raise JobError(
            f"a line is longer than {MAX_LINE_BYTES} bytes; a row holds one operation", file=file, line=number
        )
    return raw


def csv_items(stream: LineStream, scan: JobScan) -> Iterator[tuple[int, int, Any]]:
    """``(line, offset, object or Invalid)`` for every CSV data row, the header read into ``scan.layout``."""
    file = str(stream.path)
    texts = ((number, offset, stream.text(bounded(raw, number, file), number)) for number, offset, raw in stream)
    head = next(texts, None)
    while head is not None and not head[2].strip():
        head = next(texts, None)
    if head is None:
        return
    from bulkconn.jobcsv import read_header, records, row_object, sniff_delimiter

    rows = records(itertools.chain([head], texts), sniff_delimiter(head[2]), file)
    number, _, cells = next(rows)
    scan.layout = read_header(cells, sniff_delimiter(head[2]), file, number)
    for number, offset, cells in rows:
        data = row_object(scan.layout, cells)
        yield (
            number,
            offset,
            data if isinstance(data, dict) else Invalid.of_line(number, str(data)),
        )
