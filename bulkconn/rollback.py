"""``bulkconn rollback`` (a report's pre-images -> an undo job) and ``bulkconn export`` lines. Pure: no I/O.

An undo job has one line per object that bulkconn patched successfully, restoring the pre-image of every
property it changed and carrying, as ``expect``, the values it wrote::

    {"tenant": "contoso", "id": "ID", "resource": "exchangeConnector", "key": "undo:contoso:ID",
     "patch": {"serverName": "mail1.contoso.com"}, "expect": {"serverName": "mail2.contoso.com"}}

When the undo job runs, an object that no longer holds what bulkconn wrote is left alone (``skipped``,
reason ``Conflict``) unless ``--force``. Several operations on one object fold into one line: each property
goes back to its value before the *first* write and is expected at the value of the *last* one.

For each key the first ``backup`` record counts: a resumed run may back up an object again after its write
landed, and that second pre-image would already hold the new value. An operation with a backup but no result
(the run died before recording it) gets an undo line too: if its write never landed the object already holds
the pre-image and the undo run skips it as ``Unchanged``; but when such a write was folded after another one to
the same object, the undo run sees a ``Conflict`` (safe: nothing is overwritten). ``--resume`` the run first for
an exact undo; :attr:`UndoJob.unconfirmed` counts these operations so the CLI can say so. Failed, invalid and skipped operations changed
nothing and get no undo; syncs and other actions cannot be undone and are listed as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bulkconn.errors import UsageError
from bulkconn.precheck import BACKUP, Backup, read_backup
from bulkconn.registry import Resource, StructuredType, UnknownResourceError
from bulkconn.targets import resolve_resource
from bulkconn.values import ODATA_TYPE, object_type

SUPPORTED_FORMAT = 1


class RollbackError(UsageError):
    """A report that cannot be turned into an undo job (names the report and why)."""


@dataclass(frozen=True, slots=True)
class NotUndone:
    """An operation of the report that the undo job does not reverse, and why."""

    key: str
    tenant: str
    object_id: str
    action: str
    reason: str


@dataclass(slots=True)
class _Object:
    tenant: str
    resource: str
    object_id: str
    odata_type: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


@dataclass(slots=True)
class UndoJob:
    """The undo job's lines and what it leaves out."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    not_undone: list[NotUndone] = field(default_factory=list)
    operations: int = 0  # operations reversed (several may fold into one line)
    unconfirmed: int = 0  # of those, operations with a backup but no result (the run died mid-write)
    no_undo_needed: int = 0  # backed-up operations that failed, were invalid or were skipped


@dataclass(slots=True)
class _Report:
    headers: int = 0
    backups: dict[str, Backup] = field(default_factory=dict)  # key -> first backup, in report order
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # key -> latest result


def _take(report: _Report, record: Mapping[str, Any], source: str) -> None:
    """Fold one report record into ``report``."""
    kind = record.get("type")
    if kind == "header":
        if record.get("format") != SUPPORTED_FORMAT:
            raise RollbackError(f"{source}: report format {record.get('format')!r} is not one this bulkconn reads")
        report.headers += 1
    elif report.headers == 0:
        raise RollbackError(f"{source}: not a bulkconn report (the first line is not a header)")
    elif kind == BACKUP:
        backup = read_backup(record)
        if backup is not None and backup.key not in report.backups:
            report.backups[backup.key] = backup
    elif kind == "result":
        report.results[str(record.get("key", ""))] = record


def _read(records: Iterable[Mapping[str, Any] | None], source: str) -> _Report:
    report = _Report()
    for record in records:
        if record is None:
            continue  # a line torn by a crash: its operation has no result, like one never finished
        _take(report, record, source)
    if report.headers == 0:
        raise RollbackError(f"{source}: the report is empty")
    if not report.backups:
        raise RollbackError(
            f"{source} holds no pre-images: the run was made without --backup, so bulkconn cannot know what to "
            "restore. Nothing was written. Next time run with --backup to be able to roll back."
        )
    return report


def _not_undoable(report: _Report, undo: UndoJob) -> None:
    for key, result in report.results.items():
        status, action = result.get("status"), str(result.get("action", ""))
        if status not in ("succeeded", "uncertain") or key in report.backups:
            continue
        reason = (
            f"a {action} cannot be undone" if action != "update" else "no pre-image recorded (run without --backup)"
        )
        if status == "uncertain":
            reason += "; it may or may not have happened"
        item = NotUndone(key, str(result.get("tenant", "")), str(result.get("id", "")), action, reason)
        undo.not_undone.append(item)


def build_undo(records: Iterable[Mapping[str, Any] | None], *, source: str) -> UndoJob:
    """The undo job for a report's records in file order (``None`` for a torn line).

    Raises:
        RollbackError: not a bulkconn report, a format this version does not read, or no pre-images at all.
    """
    report = _read(records, source)
    undo = UndoJob()
    objects: dict[tuple[str, str, str], _Object] = {}
    for key, backup in report.backups.items():
        status = report.results.get(key, {}).get("status")
        if status not in ("succeeded", None):
            undo.no_undo_needed += 1
            continue
        undo.operations += 1
        undo.unconfirmed += status is None
        target = (backup.tenant, backup.resource, backup.object_id.lower())
        obj = objects.setdefault(target, _Object(backup.tenant, backup.resource, backup.object_id))
        obj.odata_type = obj.odata_type or backup.odata_type
        for name, value in backup.before.items():
            obj.before.setdefault(name, value)  # the value before the first write
        obj.expect.update(backup.patch)  # the value of the last write
        obj.keys.append(key)
    undo.lines = [_undo_line(obj) for obj in objects.values()]
    _not_undoable(report, undo)
    return undo


def _needs_type(job_resource: str) -> bool:
    """Whether a patch of ``job_resource`` must name the object's own type: its collection's type is abstract.

    A concrete type (Exchange Connectors) gets none: ``@odata.type`` in an undo patch would read as a change.
    """
    try:
        return resolve_resource(job_resource).entity_type.abstract
    except UnknownResourceError:
        return True  # a collection this bulkconn does not know: keep the type, validation decides


def _undo_line(obj: _Object) -> dict[str, Any]:
    named = obj.odata_type and _needs_type(obj.resource)
    patch = {ODATA_TYPE: obj.odata_type, **obj.before} if named else dict(obj.before)
    return {
        "tenant": obj.tenant,
        "id": obj.object_id,
        "resource": obj.resource,
        "key": f"undo:{obj.tenant}:{obj.object_id}",
        "patch": patch,
        "expect": obj.expect,
    }


def writable_properties(stype: StructuredType) -> tuple[str, ...]:
    """The properties a patch may set on ``stype`` (not read-only, not the key), in metadata order."""
    return tuple(name for name, prop in stype.properties.items() if not prop.read_only)


def export_line(
    obj: Mapping[str, Any], *, tenant: str, collection: Resource, job_resource: str | None = None
) -> dict[str, Any]:
    """One job line for ``bulkconn export``: the object's current values of its writable properties.

    ``job_resource`` is written as the line's ``resource`` when given (leave it out for the job default).
    An object of an abstract collection keeps its ``@odata.type`` (a field of the line, as a CSV job has it in a
    column, so both formats read as the same operations) so that the line validates as-is.
    """
    stype = object_type(collection, obj)
    line: dict[str, Any] = {"tenant": tenant, "id": obj.get("id", "")}
    if job_resource:
        line["resource"] = job_resource
    if collection.entity_type.abstract and isinstance(obj.get(ODATA_TYPE), str):
        line[ODATA_TYPE] = obj[ODATA_TYPE]
    line["patch"] = {name: obj[name] for name in writable_properties(stype) if name in obj}
    return line
