"""A job's selector lines expanded before the first write: each (tenant, collection) listed once, then recorded.

The runner calls :func:`expand` after the report's header and before the lanes start. Each (tenant, collection)
that has selector lines without a complete record in the report is listed once for all of them (paced reads,
following ``@odata.nextLink``, ``$select`` of ``id`` and the ``where`` properties), matched by an
:class:`~bulkconn.expansion.Expander`, and its records go to ``on_records`` (which writes and fsyncs them)
before :func:`expand` returns. The matches are attached to the scan (:attr:`bulkconn.jobscan.JobScan.expansion`),
where the lane readers find them.

A collection that cannot be listed in a tenant (credentials refused, 403, retries spent) becomes one ``failed``
result per selector line, keyed ``LINEKEY:TENANT`` (no object id): nothing of that line is written there. A
resumed run lists it again unless that result is final (``--retry-failed`` lists it again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from bulkconn.expansion import Expander, Match, RecordedExpansion
from bulkconn.jobscan import JobScan
from bulkconn.model import ErrorInfo, Outcome, Status, utc_now
from bulkconn.reads import Reads
from bulkconn.report.format import ExpansionDoneRecord, ExpansionRecord
from bulkconn.selectors import Selector, listing_path, select_fields

ExpansionRecords = list[ExpansionRecord | ExpansionDoneRecord]


@dataclass(slots=True)
class Expansion:
    """What :func:`expand` found: the groups' matches, and the lines that could not be listed."""

    groups: dict[tuple[int, str], tuple[Match, ...]] = field(default_factory=dict)
    failures: list[Outcome] = field(default_factory=list)
    listed_groups: int = 0  # (line, tenant) groups listed in this run (the others came from the report)


def failure_key(selector: Selector, tenant: str) -> str:
    """The report key of a selector line that could not be listed in ``tenant``."""
    return f"{selector.key}:{tenant}"


def to_list(
    scan: JobScan, recorded: RecordedExpansion, skip_keys: Container[str]
) -> dict[tuple[str, str], list[Selector]]:
    """(tenant, collection path) -> the selector lines to list there: those without a complete record whose
    listing failure (if any) is not final."""
    wanted: dict[tuple[str, str], list[Selector]] = {}
    for selector in scan.selectors.values():
        for tenant in selector.tenants:
            if recorded.matches(selector.line, tenant) is None and failure_key(selector, tenant) not in skip_keys:
                wanted.setdefault((tenant, selector.collection.path), []).append(selector)
    return wanted


def _failed(selector: Selector, tenant: str, error: ErrorInfo) -> Outcome:
    message = f"could not list {selector.collection.path} in tenant '{tenant}': {error.message}"
    return Outcome(
        key=failure_key(selector, tenant),
        line=selector.line,
        tenant=tenant,
        object_id="",
        action=selector.action,
        status=Status.FAILED,
        error=ErrorInfo(error.code, message),
        finished_at=utc_now(),
    )


async def _list_group(
    reads: Reads,
    tenant: str,
    selectors: Sequence[Selector],
    found: Expansion,
    on_records: Callable[[ExpansionRecords], None],
) -> None:
    expander = Expander(tenant, selectors)
    path = listing_path(selectors[0].collection, select_fields(selectors, with_patched=False))
    error = await reads.list_pages(tenant, path, expander.add_page)
    if error is not None:
        found.failures.extend(_failed(s, tenant, error) for s in selectors)
        return
    on_records(expander.records())
    for selector in selectors:
        found.groups[(selector.line, tenant)] = tuple(expander.matches(selector))
    found.listed_groups += len(selectors)


async def expand(
    scan: JobScan,
    reads: Reads,
    *,
    recorded: RecordedExpansion,
    on_records: Callable[[ExpansionRecords], None],
    skip_keys: Container[str] = frozenset(),
    concurrency: int = 16,
) -> Expansion:
    """List what the report does not hold yet, record it, and attach every group's matches to ``scan``."""
    found = Expansion(groups=dict(recorded.groups))
    slots = asyncio.Semaphore(concurrency)

    async def one(tenant: str, selectors: list[Selector]) -> None:
        async with slots:
            await _list_group(reads, tenant, selectors, found, on_records)

    async with asyncio.TaskGroup() as group:
        for (tenant, _), selectors in to_list(scan, recorded, skip_keys).items():
            group.create_task(one(tenant, selectors))
    scan.expansion = found.groups
    scan.skip_keys = skip_keys
    return found
