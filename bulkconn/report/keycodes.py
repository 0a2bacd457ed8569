"""Compact per-key state for reading big reports: a million keys in a few megabytes.

Most keys are job line numbers ("1", "2", ...): :class:`KeyCodes` keeps their small int codes in a ``bytearray``
indexed by the number, and only other keys (a line's own ``key``) in a dict. :class:`KeySet` is a read-only set
view of the keys whose code is not in a given set (what a resume skips), without copying a key.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping, Set
from typing import TypeVar, overload

T = TypeVar("T")

MAX_LINE = 1 << 32  # a number above this is kept as a named key (a job has nowhere near that many lines)
_COMMON_CODES = bytes(range(8))  # 0 (no key) and the codes a report reader sets
_MAX_TENANTS = 1 << 16  # tenants a KeyCodes tells apart by line (2 bytes a line); lines of others: "not known"


def line_number(key: str) -> int:
    """``key`` as a line number when it is one written the canonical way ("7", not "07" or "+7"), else -1."""
    if key.isdigit() and key.isascii() and (key[0] != "0" or key == "0"):
        number = int(key)
        if number < MAX_LINE:
            return number
    return -1


class KeyCodes(MutableMapping[str, int]):
    """key -> code (1..255): line-number keys in a bytearray, other keys in a dict.

    A line-number key set by :meth:`set_line` with its tenant also keeps the tenant, as a 2-byte index (0: not
    known; set again any other way, the tenant is forgotten): what :class:`LineProof` counts a line in.
    """

    __slots__ = ("_line_keys", "_lines", "_named", "_tenant_ids", "_tenants", "tenant_names")

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        self._lines = bytearray()
        self._named: dict[str, int] = {}
        self._line_keys = 0
        self._tenants = array("H")  # as long as _lines
        self.tenant_names = [""]  # index -> tenant
        self._tenant_ids: dict[str, int] = {}
        for key, code in items:
            self[key] = code

    def code_of_line(self, number: int) -> int:
        """The code of line-number key ``number`` (0: none)."""
        return self._lines[number] if 0 <= number < len(self._lines) else 0

    def __getitem__(self, key: str) -> int:
        code = self._code(key)
        if not code:
            raise KeyError(key)
        return code

    def _code(self, key: str) -> int:
        number = line_number(key)
        return self.code_of_line(number) if number >= 0 else self._named.get(key, 0)

    @overload
    def get(self, key: str, /) -> int | None: ...

    @overload
    def get(self, key: str, /, default: int | T) -> int | T: ...

    def get(self, key: str, /, default: int | T | None = None) -> int | T | None:
        """As ``dict.get``, without the exception a miss costs the generic Mapping.get."""
        return self._code(key) or default

    def __setitem__(self, key: str, code: int) -> None:
        if not 0 < code < 256:
            raise ValueError(f"a code is 1..255, not {code}")
        number = line_number(key)
        if number < 0:
            self._named[key] = code
        else:
            self.set_line(number, code)

    def set_line(self, number: int, code: int, tenant: str = "") -> None:
        """``self[str(number)] = code`` for a line number and a code known to be valid (a reader's fast path).

        ``tenant``: the tenant of the line's operation, as its result names it ("": not known).
        """
        lines = self._lines
        if number >= len(lines):
            grown = max(number + 1, 2 * len(lines)) - len(lines)
            lines.extend(bytes(grown))
            self._tenants.frombytes(bytes(2 * grown))  # zeros: no tenant known
        self._line_keys += not lines[number]
        lines[number] = code
        self._tenants[number] = self._tenant_ids.get(tenant) or self._new_tenant(tenant)

    def _new_tenant(self, tenant: str) -> int:
        """The index of a tenant seen for the first time (0 for "", or once 65,535 are known)."""
        if not tenant or len(self.tenant_names) >= _MAX_TENANTS:
            return 0
        index = self._tenant_ids[tenant] = len(self.tenant_names)
        self.tenant_names.append(tenant)
        return index

    def line_tenants(self) -> array[int]:
        """The tenant index (into ``tenant_names``; 0: not known) of each line-number key, indexed by the number."""
        return self._tenants

    def __delitem__(self, key: str) -> None:
        number = line_number(key)
        if number < 0:
            del self._named[key]
        elif self.code_of_line(number):
            self._lines[number] = 0
            self._tenants[number] = 0
            self._line_keys -= 1
        else:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for number, code in enumerate(self._lines):
            if code:
                yield str(number)
        yield from self._named

    def __len__(self) -> int:
        return self._line_keys + len(self._named)

    def code_counts(self) -> Counter[int]:
        """How many keys hold each code (counted in C over the bytearray: a scan per common code)."""
        lines = self._lines
        counts = Counter({code: n for code in range(1, len(_COMMON_CODES)) if (n := lines.count(code))})
        counts.update(lines.translate(None, _COMMON_CODES))  # any other code, one by one (none in a report's)
        counts.update(self._named.values())
        return counts


class LineProof:
    """The line numbers whose keys a report proves to be valid operations of one job, with a final result.

    A resumed scan counts such a line (in its tenant) without checking it again: the report's every run read this
    very job (``job_sha256``, checked again once the scan has hashed the file) with this very version of bulkconn,
    found the line valid and recorded a result that the resume keeps.
    """

    __slots__ = ("_proven", "codes", "job_sha256", "tenant_names", "tenants")

    def __init__(self, codes: KeyCodes, proven: Set[int], job_sha256: str) -> None:
        self.codes = codes._lines  # shared, not copied: a million lines are a megabyte
        self.tenants = codes.line_tenants()  # ... and their tenants, where the report's results named them
        self.tenant_names = codes.tenant_names
        self._proven = bytes(code != 0 and code in proven for code in range(256))
        self.job_sha256 = job_sha256

    def table(self) -> tuple[bytearray, bytes]:
        """(code of each line number, and 1 at each code that proves a line): what a scan looks up per line."""
        return self.codes, self._proven

    def __contains__(self, number: int) -> bool:
        return 0 <= number < len(self.codes) and bool(self._proven[self.codes[number]])


class KeySet(Set[str]):
    """The keys of a :class:`KeyCodes` whose code is not in ``excluded`` (a live view; sized when made).

    ``proof``, when given, says which of its line-number keys a resumed scan need not check again.
    """

    __slots__ = ("_codes", "_excluded", "_size", "proof")

    def __init__(self, codes: KeyCodes, excluded: Set[int], *, proof: LineProof | None = None) -> None:
        self._codes = codes
        self._excluded = frozenset(excluded)
        self._size = sum(n for code, n in codes.code_counts().items() if code not in self._excluded)
        self.proof = proof

    def __contains__(self, key: object) -> bool:
        # Asked once per job line by a resumed scan: KeyCodes._code inlined for line-number keys.
        if not isinstance(key, str):
            return False
        lines = self._codes._lines
        if key.isdigit() and key.isascii() and (key[0] != "0" or key == "0") and (number := int(key)) < len(lines):
            code = lines[number]
        else:
            code = self._codes._code(key)
        return code != 0 and code not in self._excluded

    def __iter__(self) -> Iterator[str]:
        return (key for key, code in self._codes.items() if code not in self._excluded)

    def __len__(self) -> int:
        return self._size
