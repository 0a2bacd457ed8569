"""What every hand-written contender shares: the emulator's tenants from a bulkconn TOML, and the job's PATCHes.

Standard library only: the msgraph-sdk contender imports this from its own virtual environment.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant's credentials as bulkconn's configuration names them."""

    alias: str
    tenant_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where the contenders send: Graph and identity base URLs, the CA to trust, the tenants."""

    graph_url: str
    authority_host: str
    ca_bundle: str
    tenants: dict[str, Tenant]

    def token_url(self, tenant: Tenant) -> str:
        """The tenant's client-credentials token endpoint."""
        return f"{self.authority_host.rstrip('/')}/{tenant.tenant_id}/oauth2/v2.0/token"

    def token_form(self, tenant: Tenant) -> dict[str, str]:
        """The form body of a client-credentials grant."""
        return {
            "grant_type": "client_credentials",
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "scope": SCOPE,
        }


def load_target(config: Path) -> Target:
    """Read the configuration ``bulkconn emulator serve --write-config`` wrote."""
    data = tomllib.loads(config.read_text())
    defaults = data["defaults"]
    tenants = {}
    for alias, entry in data["tenants"].items():
        secret = Path(entry["client_secret_file"]).read_text().strip()
        tenants[alias] = Tenant(alias, entry["tenant_id"], entry["client_id"], secret)
    return Target(defaults["graph_url"], defaults["authority_host"], defaults["ca_bundle"], tenants)


def load_job(job: Path) -> list[tuple[str, str, dict[str, object]]]:
    """(tenant, object id, patch) for every line of a PATCH-only job."""
    out = []
    with job.open("rb") as handle:
        for raw in handle:
            line = json.loads(raw)
            out.append((line["tenant"], line["id"], line["patch"]))
    return out


def arguments() -> argparse.Namespace:
    """The command line every contender takes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    return parser.parse_args()


def chunks(
    items: list[tuple[str, str, dict[str, object]]], size: int
) -> list[list[tuple[str, str, dict[str, object]]]]:
    """Same-tenant groups of at most ``size`` operations (a $batch belongs to one tenant), tenants taking turns."""
    by_tenant: dict[str, list[tuple[str, str, dict[str, object]]]] = {}
    for item in items:
        by_tenant.setdefault(item[0], []).append(item)
    groups = [[ops[i : i + size] for i in range(0, len(ops), size)] for ops in by_tenant.values()]
    return [group[turn] for turn in range(max(map(len, groups), default=0)) for group in groups if turn < len(group)]
