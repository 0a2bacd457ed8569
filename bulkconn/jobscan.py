"""The scan of a job file: every line checked before anything is sent, counted, and placed for its lane.

:func:`scan_job` checks every line before anything is sent (so ``--strict`` can refuse the whole job), hashes the
file, and remembers the byte offset of each valid line, per tenant (8 bytes per operation), plus, for a run, each
tenant's first ``keep`` operations themselves (a bounded number). The lane reader (:mod:`bulkconn.lanereader`)
reads them back; the lines themselves come from :mod:`bulkconn.jobitems`. On a resume, the lines the report
proves valid and final are counted by tenant without being parsed (:class:`Unparsed`, :func:`_proof`).

The file's encoding (UTF-8, with or without a BOM, or UTF-16 from PowerShell) is :mod:`bulkconn.jobfile`'s
concern; a CSV row becomes the very object its JSON line would be (:mod:`bulkconn.jobcsv`), so everything
after parsing is the same for both formats.

A selector line (``select`` or ``where`` instead of an ``id``, :mod:`bulkconn.selectors`) is validated in the
scan and kept, parsed, in :attr:`JobScan.selectors`; its offset goes to every tenant it names. Once the runner
has attached the recorded expansion (:attr:`JobScan.expansion`), the lane reader yields one operation per match
at the selector's place in the job.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Container, Iterator, Mapping, Sized
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from bulkconn.errors import JobError
from bulkconn.jobfile import UTF8, Encoding, LineStream
from bulkconn.jobitems import csv_items, jsonl_items
from bulkconn.jobline import Invalid, read_defaults
from bulkconn.jobline import LineParser as _LineParser
from bulkconn.model import Operation
from bulkconn.report.keycodes import KeySet, LineProof
from bulkconn.targets import UPDATE

if TYPE_CHECKING:  # imported where used: a JSON Lines job without selector lines never loads them
    from bulkconn.expansion import Match
    from bulkconn.jobcsv import CsvLayout
    from bulkconn.selectors import Selector


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


class Unparsed(Struct):
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
    def of(cls, proof: LineProof, configured: Collection[str]) -> Unparsed:
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


def job_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` of every well-formed line, JSON Lines or CSV rows alike (for rewriting a job)."""
    stream = LineStream.open(path)
    with closing(stream):
        items = csv_items(stream, JobScan(path)) if is_csv(path) else jsonl_items(stream)
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
        unparsed = Unparsed.of(proof, frozenset(tenants)) if proof is not None else None
        items = csv_items(stream, scan) if is_csv(path) else jsonl_items(stream, unparsed)
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
