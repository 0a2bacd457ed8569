"""Read before write: ``--skip-unchanged``, ``--backup`` and undo lines (``expect``). Pure decisions, no I/O.

When a run reads first, a worker that took a batch reads the objects of the operations not yet read, in one
request (a ``$batch`` of GETs with ``$select`` of the patched properties, paced as reads), and settles each
answer: :func:`bulkconn.retry.decide` first (429, 5xx and no answer are retried like any GET; 404 and other
errors fail the operation, as its write would fail), then :func:`after_read`:

- skip: the operation ends ``skipped`` with the reason (``Unchanged``, or ``Conflict`` for an undo line whose
  object someone changed since), and costs no write;
- proceed: with ``--backup``, the pre-image is written to the report and fsynced first; then the write goes out
  in the same turn. An operation is read once: a retried write is not read again (its pre-image would already
  hold the new value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from bulkconn.model import Operation
from bulkconn.targets import UPDATE, resolve_resource

if TYPE_CHECKING:  # imported by the functions below: only a job that reads first needs them
    from bulkconn.precheck import Backup, SkipReason


class ReadFirst(Struct, frozen=True, kw_only=True):
    """What a run reads objects for before writing them (all off: nothing is read)."""

    skip_unchanged: bool = False
    backup: bool = False
    force: bool = False  # an undo line overwrites an object changed since bulkconn wrote it

    def needed(self, op: Operation) -> bool:
        """Whether ``op`` is read before it is written (updates only: an action has nothing to compare)."""
        # Asked once per operation: the common answer (nothing read) first, without the enum's attribute lookup.
        return (self.skip_unchanged or self.backup or op.expect is not None) and op.action == UPDATE


class Skip(Struct, frozen=True):
    reason: SkipReason


class Proceed(Struct, frozen=True):
    backup: Backup | None  # to record durably before the write (``--backup``)


def read_url(op: Operation) -> str:
    """The GET of ``op``'s object: ``$select`` of every patched and expected property."""
    from bulkconn.reads import object_url

    return object_url(op.resource, op.object_id, [*op.patch, *(op.expect or {})])


def after_read(op: Operation, current: Mapping[str, Any], settings: ReadFirst) -> Skip | Proceed:
    """What to do with ``op`` now that its object is ``current``."""
    from bulkconn.precheck import backup_for, decide

    reason = decide(
        resolve_resource(op.resource),
        current,
        op.patch,
        skip_unchanged=settings.skip_unchanged,
        expect=op.expect,
        force=settings.force,
    )
    if reason is not None:
        return Skip(reason)
    return Proceed(backup_for(op, current) if settings.backup else None)
