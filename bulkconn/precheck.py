"""Decisions made after reading an object and before writing it, and the pre-image (backup) report record.

Pure: the engine reads the object (``GET`` with ``$select`` of the patched properties), then asks
:func:`decide` whether to send the write at all:

- ``--skip-unchanged``: a patch the object already satisfies is not sent; the operation ends ``skipped``
  with reason ``Unchanged`` and costs no write.
- an undo line's ``expect`` (the values bulkconn wrote): when the object no longer has them, someone changed
  it since, and it is left alone: ``skipped`` with reason ``Conflict``, unless ``--force``.

With ``--backup`` the engine then writes :func:`backup_record` (the current values of exactly the patched
properties) to the report and fsyncs it *before* the write is sent; :mod:`bulkconn.rollback` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bulkconn import model
from bulkconn.model import Operation
from bulkconn.registry import Resource
from bulkconn.report.format import BackupRecord
from bulkconn.values import ODATA_TYPE, diff, render

BACKUP: Final = "backup"


class SkipCode(StrEnum):
    """Why an operation was not sent (the ``reason.code`` of a ``skipped`` result)."""

    UNCHANGED = model.UNCHANGED  # the object already has every patched value
    CONFLICT = model.CONFLICT  # an undo line: the object is no longer what bulkconn wrote


@dataclass(frozen=True, slots=True)
class SkipReason:
    code: SkipCode
    message: str

    def to_json(self) -> dict[str, str]:
        """The ``reason`` field of a ``skipped`` result record."""
        return {"code": self.code.value, "message": self.message}


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def unchanged(resource: Resource, current: Mapping[str, Any], patch: Mapping[str, Any]) -> SkipReason | None:
    """A reason to skip when ``current`` already satisfies every property of ``patch``, else ``None``."""
    if diff(resource, current, patch):
        return None
    names = [n for n in patch if not n.startswith("@")]
    return SkipReason(SkipCode.UNCHANGED, f"already has the patched value of {_names(names)}")


def conflict(resource: Resource, current: Mapping[str, Any], expect: Mapping[str, Any]) -> SkipReason | None:
    """A reason to leave the object alone when it no longer holds ``expect`` (what bulkconn wrote), else ``None``."""
    changed = diff(resource, current, expect)
    if not changed:
        return None
    first = changed[0]
    detail = f"'{first.property}' is now {render(first.old)}, bulkconn wrote {render(first.new)}"
    more = f" (and {len(changed) - 1} more properties)" if len(changed) > 1 else ""
    return SkipReason(SkipCode.CONFLICT, f"changed since bulkconn wrote it: {detail}{more}; --force to overwrite")


def decide(
    resource: Resource,
    current: Mapping[str, Any],
    patch: Mapping[str, Any],
    *,
    skip_unchanged: bool,
    expect: Mapping[str, Any] | None = None,
    force: bool = False,
) -> SkipReason | None:
    """Whether to skip the write of ``patch`` to ``current`` (``None``: send it).

    A line with ``expect`` is always checked for ``Unchanged`` first: an undo whose object already holds the
    pre-image (the original write never landed, or someone restored it) has nothing to do and is no conflict.
    """
    if skip_unchanged or expect is not None:
        reason = unchanged(resource, current, patch)
        if reason is not None:
            return reason
    if expect is not None and not force:
        return conflict(resource, current, expect)
    return None


def pre_image(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The current values of exactly the patched properties (an omitted property is ``null``)."""
    return {name: current.get(name) for name in patch if not name.startswith("@")}


@dataclass(frozen=True, slots=True)
class Backup:
    """A pre-image as the report holds it: what the object had, and what bulkconn was about to write."""

    key: str
    line: int
    tenant: str
    resource: str
    object_id: str
    before: Mapping[str, Any]
    patch: Mapping[str, Any]
    odata_type: str = ""  # the object's own type when the answer named it (abstract collections need it back)


def backup_for(op: Operation, current: Mapping[str, Any]) -> Backup:
    """The backup of ``op`` from the object just read."""
    named = current.get(ODATA_TYPE)
    patch = {k: v for k, v in op.patch.items() if not k.startswith("@")}
    return Backup(
        op.key,
        op.line,
        op.tenant,
        op.resource,
        op.object_id,
        pre_image(current, patch),
        patch,
        named if isinstance(named, str) else "",
    )


def backup_record(backup: Backup, *, at: str) -> BackupRecord:
    """The ``backup`` report record (written and fsynced before the write is sent)."""
    record: BackupRecord = {
        "type": BACKUP,
        "key": backup.key,
        "line": backup.line,
        "tenant": backup.tenant,
        "resource": backup.resource,
        "id": backup.object_id,
        "before": dict(backup.before),
        "patch": dict(backup.patch),
        "at": at,
    }
    if backup.odata_type:
        record["odata_type"] = backup.odata_type
    return record


def read_backup(record: Mapping[str, Any]) -> Backup | None:
    """A ``backup`` record back as a :class:`Backup`; ``None`` when it is not one or is malformed."""
    fields = (record.get(n) for n in ("key", "tenant", "resource", "id"))
    key, tenant, resource, object_id = fields
    before, patch, line = record.get("before"), record.get("patch"), record.get("line")
    if record.get("type") != BACKUP or not all(isinstance(v, str) and v for v in (key, tenant, resource, object_id)):
        return None
    if not isinstance(before, Mapping) or not isinstance(patch, Mapping) or set(before) != set(patch):
        return None
    odata_type = record.get("odata_type", "")
    return Backup(
        str(key),
        line if isinstance(line, int) else 0,
        str(tenant),
        str(resource),
        str(object_id),
        dict(before),
        dict(patch),
        odata_type if isinstance(odata_type, str) else "",
    )
