"""``bulkconn plan``: what a job would change, object by object, without writing anything. Pure: no I/O.

The runner reads every targeted object (batched, paced GETs with ``$select`` of the patched properties) and
feeds each operation and the object read (or ``None`` for a 404) to a :class:`Planner`, in job order. The
planner keeps the values earlier operations of the job would have written to an object, so a second line for
the same object is diffed against the state the first one leaves, as the run would meet it.

Exit codes (in the spirit of ``terraform plan -detailed-exitcode``; they extend the CLI's 0/1/2/3/130):

====  =========================================================================================
0     nothing to change: every operation is already satisfied
4     changes pending (a patch would change something, or a sync would be sent)
1     some objects do not exist (404), could not be read, or some lines are invalid
2     usage, configuration or job error (nothing was read), as for every command
====  =========================================================================================

``2`` stays the CLI's usage error (terraform's "changes pending" would collide with it), hence ``4``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bulkconn.model import Action, Operation
from bulkconn.registry import Resource
from bulkconn.values import Change, diff, render

EXIT_NOTHING_TO_CHANGE, EXIT_PLAN_ERRORS, EXIT_CHANGES_PENDING = 0, 1, 4
PLAN = "plan"
PLAN_SUMMARY = "plan_summary"


class PlanState(StrEnum):
    """What the run would do to one operation's object."""

    CHANGE = "change"  # a patch would change these properties
    UNCHANGED = "unchanged"  # the object already has every patched value
    ACTION = "action"  # a sync (or other action) would be sent: actions always change something
    MISSING = "missing"  # the object does not exist (404): the run would fail it
    ERROR = "error"  # the object could not be read, or the line is invalid


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """The plan for one operation."""

    key: str
    line: int
    tenant: str
    object_id: str
    action: str
    state: PlanState
    changes: tuple[Change, ...] = ()
    detail: str = ""  # the sync type, the read error, or why the line is invalid
    selected: bool = False  # a match of a selector line, keyed LINEKEY:TENANT:ID (not a --out field)


class Planner:
    """Diffs operations against the objects read, in job order, keeping what earlier operations would write."""

    def __init__(self) -> None:
        # Only the patched values of objects already planned: two lines for one object must see each other.
        self._written: dict[tuple[str, str], dict[str, Any]] = {}

    def plan(
        self, op: Operation, resource: Resource, current: Mapping[str, Any] | None, *, selected: bool = False
    ) -> PlanEntry:
        """The entry for ``op`` given the object read (``None``: Graph answered 404); ``selected``: a selector match."""
        if current is None:
            return self._entry(op, PlanState.MISSING, detail="not found (404)", selected=selected)
        if op.action != Action.UPDATE:
            detail = op.sync_type or (render(op.params) if op.params else "")
            return self._entry(op, PlanState.ACTION, detail=detail, selected=selected)
        target = (op.tenant, op.object_id.lower())
        earlier = self._written.get(target)
        projected = {**current, **earlier} if earlier else current
        changes = diff(resource, projected, op.patch)
        self._written.setdefault(target, {}).update({k: v for k, v in op.patch.items() if not k.startswith("@")})
        return self._entry(op, PlanState.CHANGE if changes else PlanState.UNCHANGED, changes, selected=selected)

    @staticmethod
    def failed(op: Operation, message: str, *, selected: bool = False) -> PlanEntry:
        """The entry for an operation whose object could not be read (throttled out, 403, no answer...)."""
        return Planner._entry(op, PlanState.ERROR, detail=message, selected=selected)

    @staticmethod
    def _entry(
        op: Operation, state: PlanState, changes: tuple[Change, ...] = (), detail: str = "", *, selected: bool
    ) -> PlanEntry:
        return PlanEntry(op.key, op.line, op.tenant, op.object_id, str(op.action), state, changes, detail, selected)


def invalid_entry(key: str, line: int, tenant: str, object_id: str, action: str, message: str) -> PlanEntry:
    """The entry for an invalid job line (it would be an ``invalid`` result in a run)."""
    return PlanEntry(key, line, tenant, object_id, action, PlanState.ERROR, detail=message)


@dataclass(slots=True)
class PlanCounts:
    """How many operations are in each state; decides the exit code."""

    by_state: dict[PlanState, int] = field(default_factory=lambda: dict.fromkeys(PlanState, 0))

    def add(self, entry: PlanEntry) -> None:
        self.by_state[entry.state] += 1

    def exit_code(self) -> int:
        """1 when anything is missing or in error, else 4 when anything would change, else 0."""
        if self.by_state[PlanState.MISSING] or self.by_state[PlanState.ERROR]:
            return EXIT_PLAN_ERRORS
        if self.by_state[PlanState.CHANGE] or self.by_state[PlanState.ACTION]:
            return EXIT_CHANGES_PENDING
        return EXIT_NOTHING_TO_CHANGE

    def sentence(self) -> str:
        n = self.by_state
        return (
            f"Plan: {n[PlanState.CHANGE]} to change, {n[PlanState.ACTION]} actions to send, "
            f"{n[PlanState.UNCHANGED]} unchanged, {n[PlanState.MISSING]} not found, {n[PlanState.ERROR]} errors."
        )


def _label(entry: PlanEntry) -> str:
    """``ID (line N)``, with the line's own key when it has one (a selector match shows its line's key).

    Only a selector match's key is cut: an undo line's own key, ``undo:TENANT:ID``, has the same shape.
    """
    key = entry.key.removesuffix(f":{entry.tenant}:{entry.object_id}") if entry.selected else entry.key
    named = f", key {key}" if key != str(entry.line) else ""
    return f"  {entry.object_id or '(no id)'} (line {entry.line}{named})"


def _describe(entry: PlanEntry) -> Iterator[str]:
    where = _label(entry)
    if entry.state is PlanState.CHANGE:
        yield f"{where}:"
        for change in entry.changes:
            yield f"    {change.property}: {render(change.old)} -> {render(change.new)}"
    elif entry.state is PlanState.UNCHANGED:
        yield f"{where}: no change"
    elif entry.state is PlanState.ACTION:
        what = f"{entry.action} {entry.detail}" if entry.detail else entry.action
        yield f"{where}: {what} would be sent"
    elif entry.state is PlanState.MISSING:
        yield f"{where}: not found (404)"
    else:
        yield f"{where}: error: {entry.detail}"


def render_text(entries: Iterable[PlanEntry], counts: PlanCounts) -> Iterator[str]:
    """The plan as text lines: a ``tenant X`` heading whenever the tenant changes, then one block per object.

    Feed the entries grouped by tenant (the runner's lanes produce them so); ``counts`` is filled as they go
    and the last line is its summary sentence.
    """
    tenant: str | None = None
    for entry in entries:
        counts.add(entry)
        if entry.tenant != tenant:
            tenant = entry.tenant
            yield f"tenant {tenant or '(none)'}"
        yield from _describe(entry)
    yield counts.sentence()


def entry_record(entry: PlanEntry) -> dict[str, Any]:
    """One ``--out`` JSON Lines record; ``changes`` maps each property to ``{"old", "new"}``."""
    return {
        "type": PLAN,
        "key": entry.key,
        "line": entry.line,
        "tenant": entry.tenant,
        "id": entry.object_id,
        "action": entry.action,
        "state": entry.state.value,
        "changes": {c.property: {"old": c.old, "new": c.new} for c in entry.changes},
        "detail": entry.detail,
    }


def summary_record(counts: PlanCounts) -> dict[str, Any]:
    """The last ``--out`` record: counts by state and the exit code ``plan`` returns."""
    return {
        "type": PLAN_SUMMARY,
        "counts": {state.value: n for state, n in counts.by_state.items()},
        "exit_code": counts.exit_code(),
    }


def read_entry(record: Mapping[str, Any]) -> PlanEntry | None:
    """A ``plan`` record back as a :class:`PlanEntry` (``None`` for other records)."""
    if record.get("type") != PLAN or record.get("state") not in set(PlanState):
        return None
    raw = record.get("changes")
    changes = tuple(
        Change(name, v.get("old"), v.get("new")) for name, v in (raw or {}).items() if isinstance(v, Mapping)
    )
    return PlanEntry(
        str(record.get("key", "")),
        int(record.get("line") or 0),
        str(record.get("tenant", "")),
        str(record.get("id", "")),
        str(record.get("action", "")),
        PlanState(str(record["state"])),
        changes,
        str(record.get("detail", "")),
    )
