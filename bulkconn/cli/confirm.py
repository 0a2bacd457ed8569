"""Before a run on real tenants from a terminal: say what is about to happen, and ask.

Scripts and schedulers (stdin not a terminal) are never asked, nor are runs whose every target is on
this machine (the emulator on loopback); ``--yes`` skips the question.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from bulkconn.cli.display import least_time
from bulkconn.config import Config, TenantConfig

if TYPE_CHECKING:  # the plan is made only when there is someone to ask
    from bulkconn.dryrun import RunPlan


def is_local(tenant: TenantConfig) -> bool:
    """Whether the tenant's Graph is on this machine (the emulator): ``localhost`` or a loopback address."""
    host = urlsplit(tenant.graph_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def should_ask(config: Config, aliases: Iterable[str]) -> bool:
    """A person at a terminal, about to change tenants that are not the local emulator."""
    return sys.stdin.isatty() and not all(is_local(config.tenants[alias]) for alias in aliases)


def describe(the_plan: RunPlan) -> list[str]:
    """What the run is about to do: per tenant, the operations and the least time the limits allow."""
    operations = sum(t.operations for t in the_plan.tenants)
    lines = [f"about to send {operations} operation(s) to {len(the_plan.tenants)} tenant(s):"]
    for tenant in the_plan.tenants:
        lines.append(
            f"  {tenant.alias}: {tenant.operations} operation(s) to {tenant.endpoint}, "
            f"{least_time(tenant.min_minutes)} at {tenant.writes_per_window} writes per {tenant.window_s:g} s"
        )
    slowest = max((t.min_minutes for t in the_plan.tenants), default=0.0)
    lines.append(f"{least_time(slowest)} in all (tenants run side by side)")
    if the_plan.invalid:
        lines.append(f"{the_plan.invalid} invalid line(s) will be reported, not sent")
    return lines


def confirmed(the_plan: RunPlan) -> bool:
    """Show the plan on stderr and ask; no answer (end of input) is no."""
    for line in describe(the_plan):
        click.echo(line, err=True)
    try:
        return click.confirm("Proceed?", default=False, err=True)
    except click.Abort:
        return False
