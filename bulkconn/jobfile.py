"""The bytes of a job file: which encoding, physical lines with byte offsets, decoding with file and line.

Job files come from editors, Excel and PowerShell. Windows PowerShell 5.1 writes UTF-16 LE with a
byte-order mark (``>`` and ``Out-File``); Excel's "CSV UTF-8" and Notepad write UTF-8 with a BOM and
CRLF line ends. Both are read as they are, streamed line by line: a UTF-16 line ends at the code unit
``U+000A``, which is always 2-byte aligned, so a byte offset still names a line for the re-read.
What cannot be read (UTF-32, UTF-16 without a BOM, bytes that are not UTF-8) is refused with one
message that names the file, the encoding found and how to convert it; never one error per line.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from msgspec import Struct, field

from bulkconn.errors import JobError

_CHUNK = 1 << 16
_BLOCK = 1 << 20  # the validation pass reads a UTF-8 job in blocks of this size
# A line holds one operation (well under 10 KB); a longer one is refused without being held in memory.
MAX_LINE_BYTES = 1 << 20
_MAX_WITH_NEWLINE = MAX_LINE_BYTES + 1


class Encoding(Struct, frozen=True):
    """How a job file's text is stored: the codec, the byte-order mark and the newline's bytes."""

    codec: str
    bom: bytes
    newline: bytes

    @property
    def utf8(self) -> bool:
        return self.codec == "utf-8"


UTF8 = Encoding("utf-8", b"", b"\n")
UTF8_BOM = Encoding("utf-8", codecs.BOM_UTF8, b"\n")
UTF16_LE = Encoding("utf-16-le", codecs.BOM_UTF16_LE, b"\n\x00")
UTF16_BE = Encoding("utf-16-be", codecs.BOM_UTF16_BE, b"\x00\n")


def convert_hint(file: str, source: str) -> str:
    """How to turn ``file`` (believed to be in iconv's ``source`` encoding) into UTF-8, in its author's tools."""
    path = Path(file)
    target = path.with_name(f"{path.stem}-utf8{path.suffix}").name
    return (
        f"convert it to UTF-8, e.g. in PowerShell: Get-Content {path.name} | Set-Content -Encoding utf8 {target} "
        f"(or save it from Excel as 'CSV UTF-8'; on Linux/macOS: iconv -f {source} -t UTF-8 {path.name} > {target})"
    )


def detect(head: bytes, file: str) -> Encoding:
    """The encoding of a file that starts with ``head`` (its first bytes); refuses what cannot be read."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise JobError(
            f"the file is UTF-32, which bulkconn does not read; {convert_hint(file, 'UTF-32')}", file=file, line=1
        )
    if head.startswith(codecs.BOM_UTF8):
        return UTF8_BOM
    if head.startswith(codecs.BOM_UTF16_LE):
        return UTF16_LE
    if head.startswith(codecs.BOM_UTF16_BE):
        return UTF16_BE
    if b"\x00" in head:
        source = "UTF-16LE" if head.find(b"\x00") % 2 else "UTF-16BE"  # '{' 00 is little-endian
        raise JobError(
            f"the file holds NUL bytes: it looks like UTF-16 without a byte-order mark; {convert_hint(file, source)}",
            file=file,
            line=1,
        )
    return UTF8


def decode(raw: bytes, encoding: Encoding, file: str, line: int) -> str:
    """One line's text; bytes that are not valid in ``encoding`` stop the job with one message."""
    try:
        return raw.decode(encoding.codec)
    except UnicodeDecodeError as exc:
        found = "UTF-8" if encoding.utf8 else encoding.codec.upper()
        raise JobError(
            f"byte {exc.start + 1} of the line is not valid {found} (0x{raw[exc.start]:02x}; perhaps the file "
            f"was saved as Windows-1252 or another legacy code page); {convert_hint(file, 'WINDOWS-1252')}",
            file=file,
            line=line,
        ) from None


def lines_from(
    handle: BinaryIO, encoding: Encoding, offset: int, *, chunk: int = _CHUNK, digest: Any = None
) -> Iterator[tuple[int, bytes | None, int]]:
    """``(byte offset, raw line with its newline, size in bytes)`` from ``offset`` on (which must start a line).

    A UTF-8 line longer than :data:`MAX_LINE_BYTES` comes as ``None``: it is skipped without being held in memory
    (a line holds one operation, well under 10 KB). Every byte read is fed to ``digest`` when one is given.
    """
    handle.seek(offset)
    if encoding.utf8:
        yield from _bounded_lines(handle, offset, digest)
        return
    for at, raw in _wide_lines(handle, encoding.newline, offset, chunk):
        if digest is not None:
            digest.update(raw)
        yield at, raw, len(raw)


def _bounded_lines(handle: BinaryIO, offset: int, digest: Any) -> Iterator[tuple[int, bytes | None, int]]:
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        if digest is not None:
            digest.update(raw)
        size = len(raw)
        if size <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield offset, raw, size
        else:
            while not raw.endswith(b"\n") and (raw := handle.readline(MAX_LINE_BYTES)):
                if digest is not None:
                    digest.update(raw)
                size += len(raw)
            yield offset, None, size
        offset += size


def _wide_lines(handle: BinaryIO, newline: bytes, offset: int, chunk_size: int) -> Iterator[tuple[int, bytes]]:
    # A 2-byte newline only counts on a code-unit boundary: b"\n\x00" also occurs inside U+0A00..U+0AFF.
    buffer = b""
    while chunk := handle.read(chunk_size):
        buffer += chunk
        start = 0
        found = buffer.find(newline)
        while found != -1:
            if (found - start) % 2:
                found = buffer.find(newline, found + 1)
                continue
            end = found + len(newline)
            yield offset, buffer[start:end]
            offset += end - start
            start = end
            found = buffer.find(newline, start)
        buffer = buffer[start:]
    if buffer:
        yield offset, buffer


class _Pending(Struct):
    """The part of a line read so far, while its newline is in a later block; dropped once over-long."""

    held: bytes = b""
    size: int = 0  # bytes of the line so far, held or not
    skip: int = 0  # bytes counted in size but not held: the byte-order mark before the first line
    too_long: bool = False

    def extend(self, more: bytes) -> None:
        self.size += len(more)
        if self.too_long or not more:
            return
        self.held += more
        if self.size > MAX_LINE_BYTES:
            self.too_long, self.held = True, b""

    def complete(self, end: bytes) -> bytes | None:
        """The whole line once ``end`` (up to the newline) is read; ``None`` when it is over-long."""
        if self.too_long or self.size + len(end) > MAX_LINE_BYTES:
            return None
        return self.held + end if self.held else end


class LineStream(Struct):
    """Physical lines of a job file (byte-order mark removed), numbered from 1, hashed as they are read.

    After iterating, ``sha256``, ``size`` and ``lines`` describe the whole file exactly as
    :func:`bulkconn.fingerprint.fingerprint` does.
    """

    path: Path
    handle: BinaryIO
    encoding: Encoding
    lines: int = 0
    size: int = 0
    last_size: int = 0
    unterminated: bool = False  # the last line came without a newline (see :meth:`contents`)
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @classmethod
    def open(cls, path: Path) -> LineStream:
        """Open ``path`` and detect its encoding; :class:`JobError` when it cannot be read."""
        try:
            handle = path.open("rb")
            head = handle.read(4)
        except OSError as exc:
            raise JobError(f"cannot open the job file: {exc.strerror or exc}", file=str(path)) from None
        try:
            encoding = detect(head, str(path))
        except JobError:
            handle.close()
            raise
        return cls(path, handle, encoding)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, int, bytes | None]]:
        """``(line number, byte offset, raw line)``; the first line's offset skips the byte-order mark.

        An over-long line comes as ``None`` (see :func:`lines_from`); ``last_size`` then says how long it was.
        """
        bom = len(self.encoding.bom)
        if self.encoding.utf8:  # one generator less per line than lines_from (a million lines: a fifth of a second)
            self.handle.seek(0)
            found = _bounded_lines(self.handle, 0, self._digest)
        else:
            found = lines_from(self.handle, self.encoding, 0, digest=self._digest)
        for offset, raw, size in found:
            self.size += size
            self.last_size = size
            self.lines += 1
            if offset == 0 and bom and raw is not None:
                yield 1, bom, raw[bom:]
            else:
                yield self.lines, offset, raw

    def contents(self) -> Iterator[tuple[int, int, bytes | None]]:
        """``(line number, byte offset, line without its newline)`` of a UTF-8 file, numbered as :meth:`__iter__` does.

        The validation pass reads a million lines: whole blocks are read, hashed and split in C, half the cost of
        one ``readline`` per line. An over-long line comes as ``None`` with ``last_size`` set, as from
        :meth:`__iter__` (skipped without being held: at most one block past :data:`MAX_LINE_BYTES` is), and
        ``unterminated`` says whether the last line came without a newline.
        """
        if not self.encoding.utf8:
            raise ValueError("contents() reads UTF-8 files only")
        bom = self.encoding.bom
        self.handle.seek(len(bom))  # the first line's content starts after the byte-order mark, as __iter__ yields it
        self._digest.update(bom)
        self.size = len(bom)
        number = offset = 0
        pending = _Pending(size=len(bom), skip=len(bom))  # the BOM counts in the first line's size, as read
        while block := self.handle.read(_BLOCK):
            self._digest.update(block)
            self.size += len(block)
            pieces = block.split(b"\n")
            tail = pieces.pop()  # the start of the line the next block goes on with
            if pieces:
                # The first piece ends the line begun in earlier blocks (on the first line, after the BOM).
                content = pending.complete(pieces[0])
                number += 1
                size = pending.size + len(pieces[0]) + 1
                if content is None:
                    self.last_size = size
                    yield number, offset, None
                else:
                    yield number, offset + pending.skip, content
                offset += size
                for content in itertools.islice(pieces, 1, None):
                    number += 1
                    size = len(content) + 1
                    if size > _MAX_WITH_NEWLINE:
                        self.last_size = size
                        yield number, offset, None
                    else:
                        yield number, offset, content
                    offset += size
                pending = _Pending()
            pending.extend(tail)
        self.lines = number
        if pending.size:
            self.lines += 1
            self.unterminated = True
            content = pending.complete(b"")
            if content is None:
                self.last_size = pending.size
                yield self.lines, offset, None
            else:
                yield self.lines, offset + pending.skip, content

    def text(self, raw: bytes, line: int) -> str:
        return decode(raw, self.encoding, str(self.path), line)

    def close(self) -> None:
        self.handle.close()
