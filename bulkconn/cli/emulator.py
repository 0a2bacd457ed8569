"""``bulkconn emulator serve``: the local Graph + identity emulator as a long-running service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from bulkconn.emulator import CHAOS, Emulator, EmulatorOptions, Faults, RetryAfterFormat
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.emulator.options import ROTATING, parse_tenant_limit
from bulkconn.registry import UnknownResourceError, resource
from bulkconn.signals import interrupts

DEFAULTS = EmulatorOptions()  # every option default is the dataclass default, stated once


def _tenant_faults(values: tuple[str, ...], base: Faults) -> dict[str, Faults]:
    """Parse repeated ``ALIAS:NAME=VALUE`` options into per-tenant fault settings."""
    out: dict[str, Faults] = {}
    for value in values:
        alias, _, assignment = value.partition(":")
        name, _, number = assignment.partition("=")
        if not alias:
            raise click.BadParameter(f"{value!r}: expected ALIAS:NAME=VALUE")
        try:
            out[alias] = out.get(alias, base).with_setting(name, number)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return out


def _extra_faults(values: tuple[str, ...], base: Faults) -> Faults:
    """Apply repeated ``NAME=VALUE`` options (any field of Faults, e.g. p_html_502=0.1) to every tenant."""
    for value in values:
        name, _, number = value.partition("=")
        try:
            base = base.with_setting(name, number)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return base


def _tenant_limits(values: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Parse repeated ``ALIAS:NAME=VALUE[,NAME=VALUE]`` options into per-tenant limit overrides."""
    out: dict[str, dict[str, float]] = {}
    for value in values:
        try:
            alias, overrides = parse_tenant_limit(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        out.setdefault(alias, {}).update(overrides)
    return out


def _collection_sizes(values: tuple[str, ...]) -> dict[str, int]:
    """Parse repeated ``COLLECTION=COUNT`` options."""
    out: dict[str, int] = {}
    for value in values:
        name, _, count = value.partition("=")
        if not name or not count.strip().isdigit():
            raise click.BadParameter(f"{value!r}: expected COLLECTION=COUNT, e.g. managedDevices=500")
        out[name.strip()] = int(count)
    return out


def _refuse_existing(force: bool, **paths: Path | None) -> None:
    """An existing ``--write-config``/``--write-job`` file (perhaps a real bulkconn.toml) is replaced only with --force."""
    for option, path in paths.items():
        if path is not None and path.exists() and not force:
            raise click.BadParameter(
                f"{path} exists; pass --force to replace it, or name another file",
                param_hint=f"'--{option.replace('_', '-')}'",
            )


def _probability(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be a probability between 0 and 1")
    return value


@click.group(name="emulator")
def emulator_group() -> None:
    """The local Microsoft Graph + Entra ID emulator (for rehearsals, tests and the demo)."""


@emulator_group.command(name="serve")
@click.option("--host", default=DEFAULTS.host, show_default=True, help="Address to bind (loopback by default).")
@click.option(
    "--port", default=DEFAULTS.port, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option("--tenants", default=DEFAULTS.tenants, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--connectors-per-tenant",
    default=DEFAULTS.connectors_per_tenant,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
)
@click.option(
    "--objects-per-collection",
    default=DEFAULTS.objects_per_collection,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Seeded objects per tenant in each of: Autopilot devices, managed devices, device categories, "
    "device configurations, compliance policies.",
)
@click.option(
    "--objects",
    "objects",
    multiple=True,
    metavar="COLLECTION=COUNT",
    help="Seeded objects per tenant for one /deviceManagement collection, e.g. managedDevices=500 (repeatable).",
)
@click.option("--seed", default=DEFAULTS.seed, show_default=True, type=int)
@click.option(
    "--world",
    "world_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Load tenants, apps and connectors from this JSON file instead of generating them.",
)
@click.option(
    "--time-scale",
    default=DEFAULTS.time_scale,
    show_default=True,
    type=click.FloatRange(0.001, 100),
    help="Multiply every throttling window and Retry-After (0.05 runs a 20 s window in 1 s).",
)
@click.option("--patch-status", default="200", show_default=True, type=click.Choice(["200", "204"]))
@click.option("--page-size", default=DEFAULTS.page_size, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--retry-after",
    "retry_after",
    default="seconds",
    show_default=True,
    type=click.Choice([*(f.value for f in RetryAfterFormat), "rotating"]),
    help="Form of Retry-After on 429/503; rotating cycles seconds, fractional, http-date, absent.",
)
@click.option(
    "--writes-per-app",
    default=DEFAULTS.writes_per_app,
    show_default=True,
    type=click.IntRange(1),
    help="Writes per app per window.",
)
@click.option(
    "--writes-per-tenant",
    default=DEFAULTS.writes_per_tenant,
    show_default=True,
    type=click.IntRange(1),
    help="Writes per tenant per window.",
)
@click.option(
    "--requests-per-app",
    default=DEFAULTS.any_per_app,
    show_default=True,
    type=click.IntRange(1),
    help="Any request per app per window.",
)
@click.option(
    "--requests-per-tenant",
    default=DEFAULTS.any_per_tenant,
    show_default=True,
    type=click.IntRange(1),
    help="Any request per tenant per window.",
)
@click.option(
    "--window-s",
    type=click.FloatRange(0.001, min_open=False),
    help="Throttling window in real seconds, whatever --time-scale says (default: 20 x time scale).",
)
@click.option(
    "--global-per-app",
    default=DEFAULTS.global_per_app,
    show_default=True,
    type=click.IntRange(1),
    help="Graph's limit per app across all tenants, per 10 s x time scale.",
)
@click.option(
    "--tenant-limit",
    "tenant_limit",
    multiple=True,
    metavar="ALIAS:NAME=VALUE[,...]",
    help="Limits for one tenant, e.g. contoso:writes_per_app=40,window_s=2 (repeatable).",
)
@click.option(
    "--fault",
    "fault",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any fault setting for every tenant, e.g. p_html_502=0.05 or huge_body_bytes=1000000 (repeatable).",
)
@click.option(
    "--no-throttling",
    "no_throttling",
    is_flag=True,
    help="No Intune or global limit at all, never a 429 for load (client-overhead benchmarks).",
)
@click.option(
    "--shared-app",
    is_flag=True,
    help="One multi-tenant bulkconn app (same client id and secret) in every generated tenant.",
)
@click.option(
    "--token-latency-ms",
    default=0.0,
    type=click.FloatRange(0),
    help="Delay every token endpoint answer by N ms (not time-scaled); other requests are served meanwhile.",
)
@click.option("--intune-errors", is_flag=True, help="Intune-style error messages (a JSON-encoded _version 3 string).")
@click.option("--token-lifetime", default=DEFAULTS.token_lifetime_s, show_default=True, type=click.IntRange(1, 86_400))
@click.option("--chaos", is_flag=True, help="A few percent of every fault, plus latency.")
@click.option("--p500", default=0.0, callback=_probability, help="Probability of a 500.")
@click.option("--p503", default=0.0, callback=_probability, help="Probability of a 503 with Retry-After.")
@click.option("--p503-bare", default=0.0, callback=_probability, help="Probability of a 503 without Retry-After.")
@click.option("--p504", default=0.0, callback=_probability, help="Probability of a 504.")
@click.option("--p-drop", default=0.0, callback=_probability, help="Probability of dropping the connection.")
@click.option("--p-batch-429", default=0.0, callback=_probability, help="Probability of a 429 on a $batch envelope.")
@click.option(
    "--p-batch-garbled",
    default=0.0,
    callback=_probability,
    help="Probability of a $batch answer that drops or repeats a sub-response, or is not JSON.",
)
@click.option("--latency-ms", default=0.0, type=click.FloatRange(0), help="Added latency per request.")
@click.option("--jitter-ms", default=0.0, type=click.FloatRange(0), help="Random extra latency, 0..N ms.")
@click.option(
    "--tenant-fault",
    "tenant_fault",
    multiple=True,
    metavar="ALIAS:NAME=VALUE",
    help="A fault setting for one tenant only, e.g. contoso:p503=0.2 (repeatable).",
)
@click.option("--token-max-age", type=click.FloatRange(0), help="Refuse tokens older than this many seconds.")
@click.option("--auto-approve-device-codes", is_flag=True, help="Approve device-code sign-ins at once.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".bulkconn-emulator"),
    show_default=True,
    help="Where the CA, server certificate and token key are kept.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Written once serving; holds the base URL.",
)
@click.option(
    "--write-config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a bulkconn configuration for the emulated tenants here.",
)
@click.option(
    "--write-job",
    "job_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a valid sample job over the emulated connectors here.",
)
@click.option(
    "--force", is_flag=True, help="Replace existing --write-config and --write-job files (and the secrets folder)."
)
@click.option("--ops", default=100, show_default=True, type=click.IntRange(1), help="Operations in --write-job.")
@click.option(
    "--write-job-resource",
    "job_resource",
    default="exchangeConnectors",
    show_default=True,
    help="The collection --write-job changes, e.g. windowsAutopilotDeviceIdentities.",
)
def serve(
    host: str,
    port: int,
    tenants: int,
    connectors_per_tenant: int,
    objects_per_collection: int,
    objects: tuple[str, ...],
    seed: int,
    world_file: Path | None,
    time_scale: float,
    patch_status: str,
    page_size: int,
    retry_after: str,
    writes_per_app: int,
    writes_per_tenant: int,
    requests_per_app: int,
    requests_per_tenant: int,
    window_s: float | None,
    global_per_app: int,
    tenant_limit: tuple[str, ...],
    no_throttling: bool,
    shared_app: bool,
    token_latency_ms: float,
    fault: tuple[str, ...],
    intune_errors: bool,
    token_lifetime: int,
    chaos: bool,
    p500: float,
    p503: float,
    p503_bare: float,
    p504: float,
    p_drop: float,
    p_batch_429: float,
    p_batch_garbled: float,
    latency_ms: float,
    jitter_ms: float,
    tenant_fault: tuple[str, ...],
    token_max_age: float | None,
    auto_approve_device_codes: bool,
    state_dir: Path,
    ready_file: Path | None,
    config_path: Path | None,
    job_path: Path | None,
    force: bool,
    ops: int,
    job_resource: str,
) -> None:
    """Serve the emulator over HTTPS until SIGINT or SIGTERM.

    Existing --write-config and --write-job files are replaced only with --force.
    """
    _refuse_existing(force, write_config=config_path, write_job=job_path)
    faults = Faults(
        p500=p500,
        p503=p503,
        p503_bare=p503_bare,
        p504=p504,
        p_drop=p_drop,
        p_batch_429=p_batch_429,
        p_batch_garbled=p_batch_garbled,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
    )
    faults = _extra_faults(fault, CHAOS if chaos else faults)
    rotating = retry_after == "rotating"
    options = EmulatorOptions(
        host=host,
        port=port,
        tenants=tenants,
        connectors_per_tenant=connectors_per_tenant,
        objects_per_collection=objects_per_collection,
        collection_sizes=_collection_sizes(objects),
        seed=seed,
        world_file=world_file,
        state_dir=state_dir,
        time_scale=time_scale,
        patch_status=int(patch_status),
        page_size=page_size,
        retry_after=RetryAfterFormat.SECONDS if rotating else RetryAfterFormat(retry_after),
        retry_after_cycle=ROTATING if rotating else (),
        writes_per_app=writes_per_app,
        writes_per_tenant=writes_per_tenant,
        any_per_app=requests_per_app,
        any_per_tenant=requests_per_tenant,
        limit_window_s=window_s,
        global_per_app=global_per_app,
        tenant_limits=_tenant_limits(tenant_limit),
        throttling=not no_throttling,
        shared_app=shared_app,
        token_latency_ms=token_latency_ms,
        intune_errors=intune_errors,
        token_lifetime_s=token_lifetime,
        faults=faults,
        tenant_faults=_tenant_faults(tenant_fault, faults),
        token_max_age_s=token_max_age,
        auto_approve_device_codes=auto_approve_device_codes,
    )
    try:
        options.seeded_sizes()
        resource(job_resource)
    except (ValueError, UnknownResourceError) as exc:
        raise click.BadParameter(str(exc)) from None
    asyncio.run(_serve(options, ready_file, config_path, (job_path, ops, job_resource)))


async def _serve(
    options: EmulatorOptions, ready: Path | None, config: Path | None, job: tuple[Path | None, int, str]
) -> None:
    stop = asyncio.Event()
    with interrupts(stop.set):
        await _serve_until(stop, options, ready, config, job)
    click.echo("emulator stopped")


async def _serve_until(
    stop: asyncio.Event,
    options: EmulatorOptions,
    ready: Path | None,
    config: Path | None,
    job: tuple[Path | None, int, str],
) -> None:
    async with Emulator(options) as emu:
        if config is not None:
            secrets_dir = write_config(emu.core, emu.ca_file, config)
            click.echo(f"configuration: {config} (secrets in {secrets_dir})")
        job_path, ops, job_resource = job
        if job_path is not None:
            try:
                write_job(emu.core, job_path, ops, resource=job_resource)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
            on = "" if job_resource == "exchangeConnectors" else f" on {job_resource}"
            click.echo(f"job: {job_path} ({ops} operations{on})")
        click.echo(f"bulkconn emulator serving {emu.base_url} (CA: {emu.ca_file}); Ctrl-C stops it")
        if ready is not None:
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(emu.base_url + "\n")
            tmp.replace(ready)
        await stop.wait()
