"""The commands that only read Graph: ``bulkconn plan`` (what a job would change) and ``bulkconn export``.

Neither writes to Graph. ``plan`` scans the job as ``run`` would (invalid lines become ``error`` entries),
expands its selector lines (nothing is recorded: a plan has no report), reads every targeted object in batches
of 20 GETs with ``$select`` of the patched properties, paced as reads, and diffs each operation with a
:class:`~bulkconn.plan.Planner` in job order. ``export`` lists a collection in the chosen tenants and writes one
job line per object (:func:`bulkconn.rollback.export_line`). Nothing here prints: the CLI renders the results.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkconn.auth import MsalTokenProvider, TokenProvider
from bulkconn.config import Config
from bulkconn.expansion import RecordedExpansion
from bulkconn.jobline import Invalid
from bulkconn.jobscan import JobScan, scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.listing import expand
from bulkconn.model import Action, ErrorInfo, Operation
from bulkconn.plan import PlanEntry, Planner, invalid_entry
from bulkconn.reads import ReadFailed, Reads, object_url
from bulkconn.retry import RetryPolicy
from bulkconn.rollback import export_line
from bulkconn.selectors import listing_path, matches
from bulkconn.targets import resolve_resource
from bulkconn.transport import AiohttpTransport, Transport

_ALL = 1 << 62  # read a tenant's operations in one go: a plan holds every entry anyway


@contextlib.asynccontextmanager
async def open_reads(
    config: Config,
    *,
    transport: Transport | None = None,
    auth: TokenProvider | None = None,
    policy: RetryPolicy | None = None,
) -> AsyncIterator[Reads]:
    """A :class:`Reads` over the given transport and token provider, or over new ones closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        if transport is None:
            transport = await stack.enter_async_context(AiohttpTransport())
        if auth is None:
            provider = MsalTokenProvider(config)
            stack.callback(provider.close)
            auth = provider
        yield Reads(transport=transport, auth=auth, tenants=config.tenants, policy=policy or RetryPolicy())


# -- plan ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class JobPlan:
    """Every entry of a plan, grouped by tenant (in the job's order of tenants), each tenant's in job order."""

    entries: list[PlanEntry] = field(default_factory=list)
    requests: int = 0  # HTTP requests sent (every one a GET, or a $batch of GETs)


def _invalid(item: Invalid) -> PlanEntry:
    return invalid_entry(item.key, item.line, item.tenant, item.object_id, item.action, item.message)


def _names(op: Operation) -> list[str]:
    return [*op.patch, *(op.expect or {})] if op.action == Action.UPDATE else []


async def _plan_tenant(reads: Reads, scan: JobScan, alias: str, planner: Planner) -> list[PlanEntry]:
    reader = LaneReader(scan, alias)
    try:
        ops = await asyncio.to_thread(reader.read, _ALL)
    finally:
        reader.close()
    found = await reads.objects(alias, [object_url(op.resource, op.object_id, _names(op)) for op in ops])
    entries = []
    for op, current in zip(ops, found, strict=True):
        selected = op.line in scan.selectors
        if isinstance(current, ReadFailed) and current.status != 404:
            entries.append(planner.failed(op, f"{current.error.code}: {current.error.message}", selected=selected))
        else:
            obj = None if isinstance(current, ReadFailed) else current
            entries.append(planner.plan(op, resolve_resource(op.resource), obj, selected=selected))
    return entries


async def make_plan(job: Path, config: Config, reads: Reads) -> JobPlan:
    """The plan of ``job``: scan, expand the selector lines, read every targeted object, diff in job order."""
    invalid: list[PlanEntry] = []
    scan = await asyncio.to_thread(
        scan_job, job, list(config.tenants), on_invalid=lambda item: invalid.append(_invalid(item))
    )
    if scan.selectors:
        found = await expand(scan, reads, recorded=RecordedExpansion(), on_records=lambda records: None)
        invalid.extend(
            invalid_entry(f.key, f.line, f.tenant, "", f.action, f.error.message if f.error else "")
            for f in found.failures
        )
    planner = Planner()
    per_tenant = await asyncio.gather(*(_plan_tenant(reads, scan, alias, planner) for alias in scan.offsets))
    order = {alias: index for index, alias in enumerate(scan.offsets)}
    entries = [entry for tenant in per_tenant for entry in tenant] + invalid
    entries.sort(key=lambda e: (order.get(e.tenant, len(order)), e.tenant))  # stable: job order within a tenant
    return JobPlan(entries, reads.requests)


# -- export --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Exported:
    """How many objects each tenant gave, and the tenants whose listing failed (alias -> error)."""

    objects: dict[str, int] = field(default_factory=dict)
    failed: dict[str, ErrorInfo] = field(default_factory=dict)


async def export_objects(
    reads: Reads,
    *,
    tenants: Sequence[str],
    resource: str,
    where: Mapping[str, Any],
    job_resource: str | None,
    on_line: Callable[[dict[str, Any]], None],
) -> Exported:
    """List ``resource`` in each tenant (whole objects) and hand a job line for every object matching ``where``."""
    collection = resolve_resource(resource)
    done = Exported()
    for alias in tenants:
        count = 0

        def take(page: list[Mapping[str, Any]], alias: str = alias) -> None:
            nonlocal count
            for obj in page:
                if matches(collection, where, obj):
                    on_line(export_line(obj, tenant=alias, collection=collection, job_resource=job_resource))
                    count += 1

        error = await reads.list_pages(alias, listing_path(collection, ()), take)
        done.objects[alias] = count
        if error is not None:
            done.failed[alias] = error
    return done
