"""Selector lines expanded into operations, and the durable record of that expansion. Pure: no I/O.

A run lists each (tenant, collection) once for all its selector lines (:class:`Expander` takes the pages as they
arrive), turns every match into one operation keyed ``LINEKEY:TENANT:ID``, and records the expansion in the
report *before the first write*:

    {"type": "expansion", "line": 4, "tenant": "contoso", "key": "4:contoso:ID", "id": "ID"}      one per match
    {"type": "expansion_done", "line": 4, "tenant": "contoso", "count": 12, "listed": 40}         one per group

A group (one selector line in one tenant) counts only once its ``expansion_done`` has reached the disk with the
right ``count``; a run sends no write of a group before that. So a resumed run uses exactly the recorded objects
(even if the tenant changed meanwhile), and a group cut off by a crash is simply listed again: nothing of it
was written.

Rules: within one line an object is matched once (a listing that returns it twice, e.g. across pages while
the tenant changes, yields one operation). Across lines nothing is merged: an object matched by two selector
lines gets two operations, in line order, and the engine runs operations on one object in job order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from bulkconn.model import Action, Operation
from bulkconn.registry import short_type_name
from bulkconn.report.format import ExpansionDoneRecord, ExpansionRecord
from bulkconn.values import ODATA_TYPE

if TYPE_CHECKING:  # a job without selector lines never imports them
    from bulkconn.selectors import Selector

EXPANSION: Final = "expansion"
EXPANSION_DONE: Final = "expansion_done"


@dataclass(frozen=True, slots=True)
class Match:
    """One object a selector line selected in one tenant."""

    line: int
    tenant: str
    key: str
    object_id: str


def match_key(selector: Selector, tenant: str, object_id: str) -> str:
    """The report key of one match: the line's key (or number), the tenant and the object id."""
    return f"{selector.key}:{tenant}:{object_id}"


def operation_for(selector: Selector, match: Match) -> Operation:
    """The operation a match stands for: the selector's patch or action, on the matched object."""
    action = Action(selector.action)
    named = selector.where.get(ODATA_TYPE)  # an abstract collection's patch is sent with the type 'where' names
    return Operation(
        match.key,
        match.line,
        match.tenant,
        selector.resource,
        match.object_id,
        action,
        dict(selector.patch),
        selector.sync_type,
        odata_type=f"#microsoft.graph.{short_type_name(named)}" if isinstance(named, str) else "",
    )


@dataclass(slots=True)
class _Group:
    selector: Selector
    seen: set[str] = field(default_factory=set)
    matches: list[Match] = field(default_factory=list)


class Expander:
    """Matches the pages of one tenant's listing against every selector line of that tenant and collection."""

    def __init__(self, tenant: str, selectors: Sequence[Selector]) -> None:
        self.tenant = tenant
        self.listed = 0
        self._groups = [_Group(s) for s in sorted(selectors, key=lambda s: s.line)]

    def add_page(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Match one page of listed objects (Graph's ``value`` array)."""
        for obj in objects:
            self.listed += 1
            object_id = obj.get("id")
            if not isinstance(object_id, str) or not object_id:
                continue  # a listing always returns ids; an entry without one cannot be targeted
            for group in self._groups:
                if object_id.lower() not in group.seen and group.selector.matches(obj):
                    group.seen.add(object_id.lower())
                    key = match_key(group.selector, self.tenant, object_id)
                    group.matches.append(Match(group.selector.line, self.tenant, key, object_id))

    def matches(self, selector: Selector) -> list[Match]:
        """The matches of one selector line, in listing order."""
        return next((g.matches for g in self._groups if g.selector.line == selector.line), [])

    def records(self) -> list[ExpansionRecord | ExpansionDoneRecord]:
        """The report records of this expansion, line by line, each group closed by its ``expansion_done``."""
        out: list[ExpansionRecord | ExpansionDoneRecord] = []
        for group in self._groups:
            out.extend(match_record(m) for m in group.matches)
            out.append(done_record(group.selector.line, self.tenant, len(group.matches), self.listed))
        return out


def match_record(match: Match) -> ExpansionRecord:
    return {"type": EXPANSION, "line": match.line, "tenant": match.tenant, "key": match.key, "id": match.object_id}


def done_record(line: int, tenant: str, count: int, listed: int) -> ExpansionDoneRecord:
    return {"type": EXPANSION_DONE, "line": line, "tenant": tenant, "count": count, "listed": listed}


@dataclass(slots=True)
class RecordedExpansion:
    """The complete groups a report holds: (line, tenant) -> matches in recorded order."""

    groups: dict[tuple[int, str], tuple[Match, ...]] = field(default_factory=dict)
    incomplete: set[tuple[int, str]] = field(default_factory=set)  # begun but not closed: list them again

    def matches(self, line: int, tenant: str) -> tuple[Match, ...] | None:
        """The recorded matches of a group, or ``None`` when the group must be listed (again)."""
        return self.groups.get((line, tenant))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_expansion(records: Iterable[Mapping[str, Any]]) -> RecordedExpansion:
    """Collect the expansion from a report's records (other types are ignored; torn lines are the caller's).

    A group counts when its ``expansion_done`` follows exactly ``count`` match records of the same run (a
    ``header`` starts a run: records of a group cut off by a crash are dropped there). The first complete
    record of a group is final: the writes of that run were made against it.
    """
    pending: dict[tuple[int, str], list[Match]] = {}
    result = RecordedExpansion()
    for record in records:
        kind = record.get("type")
        if kind == "header":
            result.incomplete.update(pending)
            pending.clear()
            continue
        if kind not in (EXPANSION, EXPANSION_DONE):
            continue
        line, tenant = _int(record.get("line")), record.get("tenant")
        if line is None or not isinstance(tenant, str) or (line, tenant) in result.groups:
            continue
        group = (line, tenant)
        if kind == EXPANSION:
            key, object_id = record.get("key"), record.get("id")
            if isinstance(key, str) and isinstance(object_id, str):
                pending.setdefault(group, []).append(Match(line, tenant, key, object_id))
            continue
        found = pending.pop(group, [])
        if _int(record.get("count")) == len(found):
            result.groups[group] = tuple(found)
        else:  # a match line was torn: list the group again
            result.incomplete.add(group)
    result.incomplete.update(pending)
    result.incomplete -= set(result.groups)
    return result
