"""The lane reader: one tenant's valid operations in file order, those the scan kept, then re-read by offset.

:class:`LaneReader` hands out one tenant's kept operations (:attr:`~bulkconn.jobscan.JobScan.kept`), then re-reads
its lines by offset as its lane needs them, so a tenant with 3 operations at the end of the file starts at once,
next to one with 100,000. A selector line's recorded matches are yielded at its place in the job; a file that is
no longer the one scanned stops the lane with :class:`~bulkconn.errors.JobChanged`.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from bulkconn.errors import JobChanged, JobError
from bulkconn.jobfile import MAX_LINE_BYTES, decode, lines_from
from bulkconn.jobitems import bounded
from bulkconn.jobline import LineParser as _LineParser
from bulkconn.jobscan import file_identity
from bulkconn.model import Operation

if TYPE_CHECKING:  # imported where used: a JSON Lines job without selector lines never loads them
    from bulkconn.jobscan import JobScan
    from bulkconn.selectors import Selector

_REREAD_CHUNK = 4096  # a lane re-reads one line at a time: read UTF-16 in small pieces


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
            return orjson.loads(decode(bounded(next(raws)[1], line, file), self._encoding, file, line))
        texts = (
            (line + i, at, decode(bounded(raw, line + i, file), self._encoding, file, line + i))
            for i, (at, raw, _) in enumerate(raws)
        )
        from bulkconn.jobcsv import records, row_object

        _, _, cells = next(records(texts, self._layout.delimiter, file))
        return row_object(self._layout, cells)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
