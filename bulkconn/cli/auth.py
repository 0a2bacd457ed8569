"""``bulkconn auth check`` (the pre-flight an MSP runs before a big job) and ``bulkconn login``."""

from __future__ import annotations

import asyncio
import base64
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import orjson
from rich.markup import escape
from rich.table import Table

from bulkconn.auth import MsalTokenProvider, device_login
from bulkconn.cli.common import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    config_option,
    echo_json,
    get_config,
    json_option,
    user_errors,
)
from bulkconn.cli.console import console as rich_console
from bulkconn.config import Config, TenantConfig
from bulkconn.errors import AuthError, ConfigError, IdentityUnreachable, TransportError
from bulkconn.model import ErrorInfo
from bulkconn.resources import WRITE_ROLES
from bulkconn.retry import Done, RetryPolicy, classify
from bulkconn.transport import AiohttpTransport, HttpRequest, HttpResponse, Transport

# The one read is retried like any idempotent request (retry.classify), within a short budget: a pre-flight
# should answer in seconds. Retry-After is honoured up to 30 s.
READ_POLICY = RetryPolicy(
    max_attempts=4,
    max_attempts_500=3,
    time_budget_s=60.0,
    backoff_base_s=0.5,
    backoff_cap_s=4.0,
    retry_after_cap_s=30.0,
)
OK, AUTH, SERVICE, CONFIG = "ok", "auth", "service", "config"
Sleep = Callable[[float], Awaitable[None]]


def _granted(token: str) -> set[str] | None:
    """The roles/scopes a JWT access token claims (not verified: only to warn early), or None."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    return set(claims.get("roles", [])) | set(str(claims.get("scp", "")).split())


async def _read(
    transport: Transport, tenant: TenantConfig, token: str, *, sleep: Sleep = asyncio.sleep
) -> tuple[HttpResponse | None, ErrorInfo | None]:
    """The cheap read, retried on 429, 5xx and no answer; the last answer, or the error when there was none."""
    rng = random.Random()
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        resp: HttpResponse | None = None
        error: ErrorInfo | None = None
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
            error = ErrorInfo(exc.code, exc.message)
        decision = classify(
            status=resp.status if resp else None,
            retry_after=resp.headers.get("retry-after") if resp else None,
            error=error,
            attempt=attempt,
            elapsed_s=time.monotonic() - started,
            idempotent=True,
            policy=READ_POLICY,
            rng=rng,
        )
        if isinstance(decision, Done):
            return resp, error
        await sleep(decision.after_s)


def _graph_detail(resp: HttpResponse) -> str:
    try:
        error = orjson.loads(resp.body)["error"]
        return f"{error.get('code')}: {str(error.get('message'))[:200]}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {resp.status}"


async def _check_one(
    provider: MsalTokenProvider, transport: Transport, tenant: TenantConfig, *, sleep: Sleep = asyncio.sleep
) -> tuple[str, str]:
    """(OK, "ok"), (AUTH, why) for a credential or permission problem, (SERVICE, why) for a service error."""
    try:
        token = await provider.token(tenant.alias)
    except IdentityUnreachable as exc:  # no answer at all: the credentials were never looked at
        return SERVICE, f"service error: {exc.message}"
    except AuthError as exc:
        return AUTH, f"{exc.code}: {exc.message}"
    granted = _granted(token)
    if granted is not None and not granted & WRITE_ROLES:
        return (
            AUTH,
            "the token has no write permission (needs an Intune ReadWrite role, e.g. DeviceManagementServiceConfig.ReadWrite.All)",
        )
    resp, error = await _read(transport, tenant, token, sleep=sleep)
    if resp is None:
        assert error is not None
        return SERVICE, f"service error: no answer from Graph after retries ({error.code}: {error.message})"
    if resp.status == 200:
        return OK, "ok"
    if resp.status == 429 or resp.status >= 500:
        return SERVICE, f"service error: Graph answered {resp.status} after retries ({_graph_detail(resp)})"
    return AUTH, f"Graph answered {resp.status} ({_graph_detail(resp)})"


async def _check(config: Config) -> list[tuple[str, str, str]]:
    provider = MsalTokenProvider(config)
    try:
        async with AiohttpTransport(timeout_s=30) as transport:
            results = await asyncio.gather(*(_check_one(provider, transport, t) for t in config.tenants.values()))
    finally:
        provider.close()
    return [(alias, kind, text) for alias, (kind, text) in zip(config.tenants, results, strict=True)]


def _short(problem: ConfigError) -> str:
    """A tenant's configuration mistake without the file and tenant its row already names."""
    return f"key '{problem.key}': {problem.detail}" if problem.key else problem.detail


def _exit_code(kinds: set[str]) -> int:
    for kind, code in ((CONFIG, EXIT_USAGE), (AUTH, EXIT_AUTH), (SERVICE, EXIT_SERVICE)):
        if kind in kinds:
            return code
    return EXIT_OK


@click.group(name="auth")
def auth_group() -> None:
    """Credentials and permissions."""


@auth_group.command(name="check")
@config_option
@json_option
@user_errors
def check(config_path: Path | None, as_json: bool) -> None:
    """For every tenant: get a token and make one cheap read.

    Every tenant is checked, even when another one's configuration is wrong. Exit 2 if any tenant's
    configuration is wrong (each one is listed), else 3 if any tenant's credentials or permissions fail, else 5
    if Graph kept answering 5xx/429 (or not at all) after retries or the identity service could not be reached,
    else 0.
    """
    config = get_config(config_path, per_tenant_errors=True)
    rows = [(alias, CONFIG, f"configuration: {_short(problem)}") for alias, problem in config.problems.items()]
    rows += asyncio.run(_check(config))
    table = Table(title=f"auth check ({config.source})", title_justify="left")
    table.add_column("tenant")
    table.add_column("result")
    for alias, kind, text in rows:
        table.add_row(alias, "[green]ok[/green]" if kind == OK else f"[red]{escape(text)}[/red]")
    rich_console(stderr=as_json).print(table)  # with --json, stdout holds the JSON document only
    code = _exit_code({kind for _, kind, _ in rows})
    if as_json:
        tenants = [{"tenant": alias, "result": kind, "detail": text} for alias, kind, text in rows]
        echo_json({"config": config.source, "exit_code": code, "tenants": tenants})
    sys.exit(code)


@click.command()
@click.argument("tenant")
@config_option
@user_errors
def login(tenant: str, config_path: Path | None) -> None:
    """Sign in to TENANT with the device-code flow (for tenants with auth = "device-code")."""
    config = get_config(config_path)
    user = device_login(config, tenant, lambda message: click.echo(message, err=True))
    click.echo(f"signed in to {tenant} as {user}; the token cache is readable only by you")
