"""``bulkconn auth check`` (the pre-flight an MSP runs before a big job) and ``bulkconn login``."""

from __future__ import annotations

import asyncio
import base64
import sys
import uuid
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from bulkconn.auth import MsalTokenProvider, device_login
from bulkconn.cli.common import EXIT_AUTH, EXIT_OK, config_option, get_config, user_errors
from bulkconn.config import Config, TenantConfig
from bulkconn.errors import AuthError, TransportError
from bulkconn.transport import AiohttpTransport, HttpRequest, Transport

WRITE_ROLES = {"DeviceManagementServiceConfig.ReadWrite.All", "DeviceManagementConfiguration.ReadWrite.All"}


def _granted(token: str) -> set[str] | None:
    """The roles/scopes a JWT access token claims (not verified: only to warn early), or None."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    return set(claims.get("roles", [])) | set(str(claims.get("scp", "")).split())


async def _check_one(provider: MsalTokenProvider, transport: Transport, tenant: TenantConfig) -> tuple[bool, str]:
    try:
        token = await provider.token(tenant.alias)
    except AuthError as exc:
        return False, f"{exc.code}: {exc.message}"
    granted = _granted(token)
    if granted is not None and not granted & WRITE_ROLES:
        return False, "the token has no write permission (needs DeviceManagementServiceConfig.ReadWrite.All)"
    try:
        resp = await transport.send(
            HttpRequest(
                method="GET",
                url=f"{tenant.graph_root}/deviceManagement/exchangeConnectors?$top=1",
                token=token,
                client_request_id=str(uuid.uuid4()),
                ca_bundle=tenant.ca_bundle,
            )
        )
    except TransportError as exc:
        return False, f"{exc.code}: {exc.message}"
    if resp.status == 200:
        return True, "ok"
    try:
        error = orjson.loads(resp.body)["error"]
        detail = f"{error.get('code')}: {str(error.get('message'))[:200]}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = f"HTTP {resp.status}"
    return False, f"Graph answered {resp.status} ({detail})"


async def _check(config: Config) -> list[tuple[str, bool, str]]:
    provider = MsalTokenProvider(config)
    try:
        async with AiohttpTransport(timeout_s=30) as transport:
            results = await asyncio.gather(*(_check_one(provider, transport, t) for t in config.tenants.values()))
    finally:
        provider.close()
    return [(alias, ok, text) for alias, (ok, text) in zip(config.tenants, results, strict=True)]


@click.group(name="auth")
def auth_group() -> None:
    """Credentials and permissions."""


@auth_group.command(name="check")
@config_option
@user_errors
def check(config_path: Path | None) -> None:
    """For every tenant: get a token and make one cheap read; exit 3 if any tenant fails."""
    config = get_config(config_path)
    rows = asyncio.run(_check(config))
    table = Table(title=f"auth check ({config.source})", title_justify="left")
    table.add_column("tenant")
    table.add_column("result")
    for alias, ok, text in rows:
        table.add_row(alias, "[green]ok[/green]" if ok else f"[red]{text}[/red]")
    Console().print(table)
    sys.exit(EXIT_OK if all(ok for _, ok, _ in rows) else EXIT_AUTH)


@click.command()
@click.argument("tenant")
@config_option
@user_errors
def login(tenant: str, config_path: Path | None) -> None:
    """Sign in to TENANT with the device-code flow (for tenants with auth = "device-code")."""
    config = get_config(config_path)
    user = device_login(config, tenant, lambda message: click.echo(message, err=True))
    click.echo(f"signed in to {tenant} as {user}; the token cache is readable only by you")
