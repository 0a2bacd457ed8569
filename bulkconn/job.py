"""Stream a job file (JSON Lines, or CSV from a spreadsheet) into validated operations; errors carry file and line.

A job is read twice, never held in memory:

1. :func:`scan_job` checks every line before anything is sent (so ``--strict`` can refuse the whole
   job), hashes the file, and remembers the byte offset of each valid line, per tenant (8 bytes per
   operation), plus, for a run, each tenant's first ``keep`` operations themselves (a bounded number).
2. :class:`LaneReader` hands out one tenant's kept operations, then re-reads its lines by offset as its
   lane needs them, so a tenant with 3 operations at the end of the file starts at once, next to one
   with 100,000.

The file's encoding (UTF-8, with or without a BOM, or UTF-16 from PowerShell) is :mod:`bulkconn.jobfile`'s
concern; a CSV row becomes the very object its JSON line would be (:mod:`bulkconn.jobcsv`), so everything
after parsing is the same for both formats.

A selector line (``select`` or ``where`` instead of an ``id``, :mod:`bulkconn.selectors`) is validated in the
scan and kept, parsed, in :attr:`JobScan.selectors`; its offset goes to every tenant it names. Once the runner
has attached the recorded expansion (:attr:`JobScan.expansion`), the lane reader yields one operation per match
at the selector's place in the job.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Collection, Container, Iterator, Mapping, Sized
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from msgspec import Struct, field

from bulkconn.errors import JobChanged, JobError
from bulkconn.jobfile import MAX_LINE_BYTES, UTF8, Encoding, LineStream, decode, lines_from
from bulkconn.jobline import LINE_FIELDS, Invalid, read_defaults
from bulkconn.jobline import LineParser as _LineParser
from bulkconn.model import Operation
from bulkconn.report.keycodes import KeySet, LineProof
from bulkconn.targets import UPDATE, resolve_resource

if TYPE_CHECKING:  # imported where used: a JSON Lines job without selector lines never loads them
    from bulkconn.expansion import Match
    from bulkconn.jobcsv import CsvLayout
    from bulkconn.selectors import Selector

# resolve_resource: the one resource resolution, for selectors, plan and rollback too; Invalid and LINE_FIELDS: what
# a checked line is, and its fields (bulkconn.jobline's), for the modules that read jobs.
__all__ = ["LINE_FIELDS", "Invalid", "resolve_resource"]

_REREAD_CHUNK = 4096  # a lane re-reads one line at a time: read UTF-16 in small pieces


class JobScan(Struct):
    """What the validation pass learned: offsets of valid lines per tenant, counts, and the file hash."""

    path: Path
    sha256: str = ""
    lines: int = 0
    size: int = 0
    valid: int = 0
    invalid: int = 0
    skipped: int = 0
    skipped_by_tenant: dict[str, int] = field(default_factory=dict)  # what a resume skipped, per tenant
    offsets: dict[str, array[int]] = field(default_factory=dict)  # tenant -> byte offsets of its valid lines
    line_numbers: dict[str, array[int]] = field(default_factory=dict)  # tenant -> their line numbers
    # tenant -> its valid lines in the whole job (a selector line counts once in each tenant it names), those
    # skipped by a resume included: shards.partition's input
    tenant_operations: dict[str, int] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    encoding: Encoding = UTF8
    layout: CsvLayout | None = None  # a CSV job's header; None for JSON Lines
    positions: bool = True  # keep the offsets of valid lines (a run reads them back; validation does not)
    identity: tuple[int, ...] = ()  # the file as scanned (see :func:`file_identity`); re-reads check it
    selectors: dict[int, Selector] = field(default_factory=dict)  # line -> its selector (counted in `valid`)
    # Filled by the runner before the lanes start: (line, tenant) -> the recorded matches, and the keys to skip.
    expansion: Mapping[tuple[int, str], tuple[Match, ...]] = field(default_factory=dict)
    skip_keys: Container[str] = frozenset()
    # tenant -> its first valid operations, as validated: the lanes send them without reading the job again. At
    # most ``keep`` per tenant, and none after a selector line (so each is the start of its tenant's ``offsets``).
    kept: dict[str, list[Operation]] = field(default_factory=dict)
    keep: int = 0

    @property
    def operations(self) -> int:
        """Operations to send: valid id lines, plus every recorded match not already final (after expansion)."""
        matches = sum(1 for found in self.expansion.values() for m in found if m.key not in self.skip_keys)
        return self.valid - len(self.selectors) + matches

    def unexpanded(self) -> int:
        """Selector lines' (line, tenant) groups with no expansion attached yet: they are listed when the run starts."""
        return sum(1 for s in self.selectors.values() for tenant in s.tenants if (s.line, tenant) not in self.expansion)


def file_identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is edited, replaced or appended to: device, inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def is_csv(path: Path) -> bool:
    """Whether ``path`` is read as a CSV job (by its extension, as Excel names it)."""
    return path.suffix.lower() == ".csv"


class _Unparsed(Struct):
    """On a resumed scan of JSON Lines: the lines a report proves valid and final, counted by tenant unread.

    Such a line is known by its number alone (:class:`~bulkconn.report.keycodes.LineProof`, which also names its
    tenant): parsing it again would only find what the report says, at a third of the scan's cost. A line whose
    tenant is not configured any more is parsed and checked as any other.
    """

    codes: bytearray
    proven: bytes
    tenants: array[int]
    names: list[str]
    usable: bytes  # by tenant index: 1 for a configured tenant (never for 0, "not known")
    counted: list[int]  # by tenant index

    @classmethod
    def of(cls, proof: LineProof, configured: Collection[str]) -> _Unparsed:
        codes, proven = proof.table()
        usable = bytes(bool(name) and name in configured for name in proof.tenant_names)
        return cls(codes, proven, proof.tenants, proof.tenant_names, usable, [0] * len(usable))

    def add_to(self, scan: JobScan) -> None:
        """Count the lines counted here as :func:`_admit` counts a skipped operation."""
        for index, n in enumerate(self.counted):
            if n:
                tenant = self.names[index]
                scan.tenant_operations[tenant] = scan.tenant_operations.get(tenant, 0) + n
                scan.skipped_by_tenant[tenant] = scan.skipped_by_tenant.get(tenant, 0) + n
                scan.skipped += n


def _jsonl_items(stream: LineStream, unparsed: _Unparsed | None = None) -> Iterator[tuple[int, int, Any]]:
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
    """:func:`_jsonl_items` of a UTF-16 file: each line decoded to text first."""
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


def _bounded(raw: bytes | None, number: int, file: str) -> bytes:
    if raw is None:  # a spreadsheet row cannot be skipped alone: a quoted cell may continue on the next line
        raise JobError(
            f"a line is longer than {MAX_LINE_BYTES} bytes; a row holds one operation", file=file, line=number
        )
    return raw


def _csv_items(stream: LineStream, scan: JobScan) -> Iterator[tuple[int, int, Any]]:
    """``(line, offset, object or Invalid)`` for every CSV data row, the header read into ``scan.layout``."""
    file = str(stream.path)
    texts = ((number, offset, stream.text(_bounded(raw, number, file), number)) for number, offset, raw in stream)
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


def job_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` of every well-formed line, JSON Lines or CSV rows alike (for rewriting a job)."""
    stream = LineStream.open(path)
    with closing(stream):
        items = _csv_items(stream, JobScan(path)) if is_csv(path) else _jsonl_items(stream)
        for number, _, data in items:
            if not isinstance(data, Invalid):
                yield number, data


def scan_job(
    path: Path,
    tenants: Collection[str],
    *,
    on_invalid: Callable[[Invalid], None],
    skip_keys: Container[str] = frozenset(),
    positions: bool = True,
    keep: int = 0,
) -> JobScan:
    """Validate every line (blocking; run it in a thread). Invalid lines go to ``on_invalid``.

    A ``.csv`` file is read as rows of a spreadsheet (:mod:`bulkconn.jobcsv`), anything else as JSON Lines.
    ``positions=False`` (validation only) keeps no offsets: memory stays the same for any size of job.
    ``keep``: how many of each tenant's first valid operations to keep in :attr:`JobScan.kept` (a lane's first
    read-ahead).
    """
    stream = LineStream.open(path)
    scan = JobScan(path, encoding=stream.encoding, identity=file_identity(path), positions=positions, keep=keep)
    with closing(stream):
        proof = _proof(skip_keys)
        unparsed = _Unparsed.of(proof, frozenset(tenants)) if proof is not None else None
        items = _csv_items(stream, scan) if is_csv(path) else _jsonl_items(stream, unparsed)
        _check_items(scan, items, list(tenants), on_invalid, skip_keys)
    if unparsed is not None:
        unparsed.add_to(scan)
    scan.sha256, scan.size, scan.lines = stream.sha256, stream.size, stream.lines
    if file_identity(path) != scan.identity or (proof is not None and proof.job_sha256 != scan.sha256):
        raise JobError("the job file changed while it was being validated; nothing was sent", file=str(path))
    return scan


def _proof(skip_keys: Container[str]) -> LineProof | None:
    """What the report being resumed proves of the job's lines (see :class:`~bulkconn.report.keycodes.LineProof`)."""
    return skip_keys.proof if isinstance(skip_keys, KeySet) else None


def _check_items(
    scan: JobScan,
    items: Iterator[tuple[int, int, Any]],
    tenants: list[str],
    on_invalid: Callable[[Invalid], None],
    skip_keys: Container[str],
) -> None:
    parser, first = _parser(scan, items, tenants, on_invalid)
    explicit_keys: set[str] = set()
    if first is not None:
        _check_item(scan, parser, first, explicit_keys, tenants, on_invalid, skip_keys)
    skipping = not isinstance(skip_keys, Sized) or len(skip_keys) > 0
    proof = _proof(skip_keys)
    codes, proven = proof.table() if proof is not None else (bytearray(), bytes(256))
    # The common line (a valid plain PATCH, not skipped; or on resume, one the report proves valid and final) is
    # counted right here: a million of them are the job's scan, and an Operation built for each would cost a third.
    plain_tenant, unkeyed_tenant, counts, plain = parser.plain_tenant, parser.unkeyed_tenant, scan.tenant_operations, 0
    offsets, numbers = (scan.offsets, scan.line_numbers) if scan.positions else (None, None)
    proven_upto, proved = len(codes), Counter[str]()  # proved: per tenant, lines counted by the report's proof
    for number, start, data in items:
        if data.__class__ is dict:
            if number < proven_upto and proven[codes[number]] and (tenant := unkeyed_tenant(data)) is not None:
                proved[tenant] += 1
                continue
            tenant = plain_tenant(data)
            if tenant is not None and not (skipping and str(number) in skip_keys):
                plain += 1
                counts[tenant] = counts.get(tenant, 0) + 1
                if offsets is not None and numbers is not None:
                    _place(offsets, numbers, tenant, start, number)
                    if scan.keep and (kept := _room(scan, tenant)) is not None:  # a selector line ends the keeping
                        kept.append(parser.plain(data, number, tenant))
                continue
        _check_item(scan, parser, (number, start, data), explicit_keys, tenants, on_invalid, skip_keys)
    scan.valid += plain
    if plain:
        scan.actions[UPDATE] = scan.actions.get(UPDATE, 0) + plain
    for tenant, n in proved.items():  # valid operations of the job, skipped: as _admit counts them
        counts[tenant] = counts.get(tenant, 0) + n
        scan.skipped_by_tenant[tenant] = scan.skipped_by_tenant.get(tenant, 0) + n
    scan.skipped += proved.total()


def _parser(
    scan: JobScan, items: Iterator[tuple[int, int, Any]], tenants: list[str], on_invalid: Callable[[Invalid], None]
) -> tuple[_LineParser, tuple[int, int, Any] | None]:
    """The parser for the job's lines, once the first readable line said whether it holds the defaults.

    Lines that cannot be read before it are admitted as invalid. Returns the parser and that first line when it
    is not the defaults (it is still to be checked), else ``None``.
    """
    for number, start, data in items:
        if isinstance(data, Invalid):  # never skipped on resume: a line that cannot be read has no key of its own
            _admit(scan, data, start, (), on_invalid)
            continue
        if isinstance(data, dict) and "defaults" in data:
            scan.defaults = read_defaults(data, str(scan.path), number)
            return _LineParser(scan.defaults, tenants), None
        return _LineParser({}, tenants), (number, start, data)
    return _LineParser({}, tenants), None


def _check_item(
    scan: JobScan,
    parser: _LineParser,
    item: tuple[int, int, Any],
    explicit_keys: set[str],
    tenants: list[str],
    on_invalid: Callable[[Invalid], None],
    skip_keys: Container[str],
) -> None:
    """Check and count one line in full (anything but a plain PATCH: any line with a problem, a selector...)."""
    number, start, data = item
    if isinstance(data, Invalid):
        _admit(scan, data, start, (), on_invalid)
        return
    if isinstance(data, dict) and ("defaults" in data or "select" in data or "where" in data):  # rare lines
        if "defaults" in data:
            misplaced = Invalid.of_line(number, "a defaults line must be the first line")
            _admit(scan, misplaced, start, (), on_invalid)
            return
        from bulkconn.selectors import is_selector  # imported by the first selector line, not by every job

        if is_selector(data):
            _admit_selector(scan, data, number, start, tenants, explicit_keys, on_invalid)
            return
    _admit(scan, _unique(parser.parse(data, number), explicit_keys), start, skip_keys, on_invalid)


def _admit_selector(
    scan: JobScan,
    data: dict[str, Any],
    number: int,
    start: int,
    tenants: list[str],
    explicit_keys: set[str],
    on_invalid: Callable[[Invalid], None],
) -> None:
    """Validate a selector line; a valid one is kept and its offset goes to every tenant it selects in."""
    from bulkconn.selectors import Selector, SelectorProblem, parse_selector

    found = parse_selector(data, line=number, file=str(scan.path), tenants=tenants, defaults=scan.defaults)
    if isinstance(found, Selector) and found.key != str(number) and found.key in explicit_keys:
        found = SelectorProblem(str(scan.path), number, found.key, "key", f"duplicate key '{found.key}'")
    if isinstance(found, SelectorProblem):
        tenant = data.get("tenant", scan.defaults.get("tenant", ""))
        action = data.get("action", scan.defaults.get("action", "update"))
        on_invalid(Invalid(number, found.key, str(tenant), "", str(action), found.message))
        scan.invalid += 1
        return
    explicit_keys.add(found.key)
    scan.keep = 0  # its matches are unknown until listed: later operations are read back, after its expansion
    scan.selectors[number] = found
    scan.valid += 1
    scan.actions[found.action] = scan.actions.get(found.action, 0) + 1
    for tenant in found.tenants:
        scan.offsets.setdefault(tenant, array("q")).append(start)
        scan.line_numbers.setdefault(tenant, array("q")).append(number)
        # Its matches are unknown until listed: a selector weighs one operation in each tenant it names.
        scan.tenant_operations[tenant] = scan.tenant_operations.get(tenant, 0) + 1


def _unique(result: Operation | Invalid, explicit_keys: set[str]) -> Operation | Invalid:
    """An operation whose explicit key an earlier line already used becomes invalid."""
    if not isinstance(result, Operation) or result.key == str(result.line):
        return result
    if result.key in explicit_keys:
        return Invalid(
            result.line,
            result.key,
            result.tenant,
            result.object_id,
            result.action,
            f"line {result.line}: duplicate key '{result.key}'",
        )
    explicit_keys.add(result.key)
    return result


def _admit(
    scan: JobScan,
    result: Operation | Invalid,
    start: int,
    skip_keys: Container[str],
    on_invalid: Callable[[Invalid], None],
) -> None:
    """Count one parsed line: skipped (final in the report being resumed), invalid, or valid at ``start``."""
    if isinstance(result, Operation):
        scan.tenant_operations[result.tenant] = scan.tenant_operations.get(result.tenant, 0) + 1
    if result.key in skip_keys:
        scan.skipped += 1
        scan.skipped_by_tenant[result.tenant] = scan.skipped_by_tenant.get(result.tenant, 0) + 1
    elif isinstance(result, Invalid):
        on_invalid(result)
        scan.invalid += 1
    else:
        scan.valid += 1
        scan.actions[result.action] = scan.actions.get(result.action, 0) + 1
        if scan.positions:
            _place(scan.offsets, scan.line_numbers, result.tenant, start, result.line)
            if scan.keep and (kept := _room(scan, result.tenant)) is not None:
                kept.append(result)


def _room(scan: JobScan, tenant: str) -> list[Operation] | None:
    """``tenant``'s kept operations while it may keep one more (``scan.keep`` in all), else ``None``."""
    kept = scan.kept.get(tenant)
    if kept is None:
        kept = scan.kept[tenant] = []
    return kept if len(kept) < scan.keep else None


def _place(offsets: dict[str, array[int]], numbers: dict[str, array[int]], tenant: str, start: int, line: int) -> None:
    """Remember where a valid line of ``tenant`` is, for its lane to read it again."""
    found = offsets.get(tenant)
    if found is None:  # not setdefault: that would build two arrays for every line
        found = offsets[tenant] = array("q")
        numbers[tenant] = array("q")
    found.append(start)
    numbers[tenant].append(line)


class Fingerprint(Struct, frozen=True):
    """What identifies a job file's content: recorded in the report header, checked on resume."""

    sha256: str
    size: int
    lines: int  # counted as the scan counts them: a last line without a newline is a line


def fingerprint(path: Path) -> Fingerprint:
    """The job file's hash, size and line count, counted as :func:`scan_job` counts them."""
    stream = LineStream.open(path)
    if not stream.encoding.utf8:  # a UTF-16 line ends at a code unit, not at any 0x0A byte
        with closing(stream):
            for _ in stream:
                pass
        return Fingerprint(stream.sha256, stream.size, stream.lines)
    stream.close()
    digest = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise JobError(f"cannot read the job file: {exc.strerror or exc}", file=str(path)) from exc
    return Fingerprint(digest.hexdigest(), size, lines + (last != b"\n"))


class LaneReader:
    """Hands out one tenant's valid operations in file order: first those the scan kept (:attr:`JobScan.kept`),
    then its lines read back by offset (blocking reads: call :meth:`read` in a thread)."""

    def __init__(self, scan: JobScan, tenant: str) -> None:
        self._offsets = scan.offsets.get(tenant, array("q"))
        self._lines = scan.line_numbers.get(tenant, array("q"))
        self._next = 0
        self._tenant = tenant
        self._scan = scan
        self._kept: deque[Operation] = deque(scan.kept.pop(tenant, ()))  # handed out once, then freed
        self._expanded: deque[Operation] = deque()  # the rest of a selector line's matches
        self._parser = _LineParser(scan.defaults, [tenant])
        self._path = scan.path
        self._encoding = scan.encoding
        self._layout = scan.layout
        self._identity = scan.identity
        self._handle: BinaryIO | None = None

    @property
    def remaining(self) -> int:
        return len(self._offsets) - self._next + len(self._expanded)

    @property
    def kept(self) -> int:
        """How many of the next operations :meth:`read_kept` hands out from memory."""
        return len(self._kept)

    def read_kept(self, count: int) -> list[Operation]:
        """Up to ``count`` of the operations the scan kept: no file read, so the event loop may call it.

        Raises :class:`JobChanged` when the file is no longer the one scanned, as :meth:`read` does: a job edited
        during the run stops it at the lane's next trip for operations, wherever they come from.
        """
        self._check_identity()
        taken = [self._kept.popleft() for _ in range(min(count, len(self._kept)))]
        self._next += len(taken)
        return taken

    def _check_identity(self) -> None:
        if self._identity and file_identity(self._path) != self._identity:
            raise JobChanged(
                "the job changed while running (edited, replaced or removed since it was validated)",
                file=str(self._path),
            )

    def read(self, count: int) -> list[Operation]:
        """The next ``count`` operations of this tenant, in file order (a selector line's matches in its place).

        Raises :class:`JobChanged` when the file is no longer the one scanned (edited, replaced, appended
        to or removed): a line read by its old offset could be another operation.
        """
        out = self.read_kept(count)  # checks the file's identity
        if len(out) == count:
            return out
        try:
            if self._handle is None:
                self._handle = self._path.open("rb")
            return out + self._read(self._handle, count - len(out))
        except JobChanged:
            raise
        except (OSError, ValueError, JobError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise JobChanged(
                f"the job changed while running: it cannot be read as validated ({exc})", file=str(self._path)
            ) from None

    def _read(self, handle: BinaryIO, count: int) -> list[Operation]:
        out: list[Operation] = []
        while len(out) < count and (self._expanded or self._next < len(self._offsets)):
            if self._expanded:
                out.append(self._expanded.popleft())
                continue
            offset, line = self._offsets[self._next], self._lines[self._next]
            self._next += 1
            selector = self._scan.selectors.get(line)
            if selector is not None:
                self._expand(selector)
                continue
            result = self._parser.parse(self._object_at(handle, offset, line), line)
            if not isinstance(result, Operation):
                raise JobChanged(
                    f"the job changed while running: the line is not as validated: {result.message}",
                    file=str(self._path),
                    line=line,
                )
            out.append(result)
        return out

    def _expand(self, selector: Selector) -> None:
        from bulkconn.expansion import operation_for

        matches = self._scan.expansion.get((selector.line, self._tenant), ())
        skip = self._scan.skip_keys
        self._expanded.extend(operation_for(selector, m) for m in matches if m.key not in skip)

    def _object_at(self, handle: BinaryIO, offset: int, line: int) -> Any:
        file = str(self._path)
        if self._layout is None and self._encoding.utf8:
            handle.seek(offset)
            return orjson.loads(handle.readline(MAX_LINE_BYTES + 1))
        raws = lines_from(handle, self._encoding, offset, chunk=_REREAD_CHUNK)
        if self._layout is None:
            return orjson.loads(decode(_bounded(next(raws)[1], line, file), self._encoding, file, line))
        texts = (
            (line + i, at, decode(_bounded(raw, line + i, file), self._encoding, file, line + i))
            for i, (at, raw, _) in enumerate(raws)
        )
        from bulkconn.jobcsv import records, row_object

        _, _, cells = next(records(texts, self._layout.delimiter, file))
        return row_object(self._layout, cells)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
