"""What ``run --dry-run`` (and the question asked at a terminal before a run) shows: per tenant, the requests a job
takes and how long at least, with a few example requests. Sends nothing.

A module of its own so that a run that asks nothing imports none of it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkconn.batching import request_for
from bulkconn.config import Config
from bulkconn.jobline import Invalid
from bulkconn.lanereader import LaneReader
from bulkconn.runner import strict_check

PLAN_EXAMPLES = 3  # requests shown per tenant by --dry-run


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One example request: the job line it comes from, and what would be sent."""

    line: int
    method: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TenantPlan:
    """What one tenant's part of the job takes."""

    alias: str
    operations: int
    requests: int
    endpoint: str  # the $batch URL, or the Graph root for single requests
    min_minutes: float  # at the configured write limit (the pacer fills every window to it)
    writes_per_window: int
    window_s: float
    examples: tuple[PlannedRequest, ...]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What ``run`` would send, without sending anything."""

    valid: int
    invalid: int
    problems: tuple[Invalid, ...]
    tenants: tuple[TenantPlan, ...]


async def plan(job: Path, config: Config, *, batch_size: int, skip_keys: Container[str] = frozenset()) -> RunPlan:
    """Validate ``job`` and say, per tenant, how many requests it takes and how long at least."""
    scan, problems = await strict_check(job, config, skip_keys=skip_keys)
    tenants = []
    for alias, offsets in sorted(scan.offsets.items()):
        tenant = config.tenants[alias]
        count = len(offsets)
        reader = LaneReader(scan, alias)
        try:
            ops = await asyncio.to_thread(reader.read, PLAN_EXAMPLES)
        finally:
            reader.close()
        examples = tuple(PlannedRequest(op.line, *_method_url_body(op)) for op in ops)
        tenants.append(
            TenantPlan(
                alias=alias,
                operations=count,
                requests=math.ceil(count / batch_size),
                endpoint=f"{tenant.graph_root}/{'$batch' if batch_size > 1 else '...'}",
                min_minutes=count / (tenant.writes_per_20s / tenant.window_s) / 60,
                writes_per_window=tenant.writes_per_20s,
                window_s=tenant.window_s,
                examples=examples,
            )
        )
    return RunPlan(scan.valid, scan.invalid, tuple(problems), tuple(tenants))


def _method_url_body(op: Any) -> tuple[str, str, dict[str, Any]]:
    req = request_for(op)
    return req.method, req.url, req.body
