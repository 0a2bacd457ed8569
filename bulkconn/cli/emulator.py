"""``bulkconn emulator serve``: the local Graph + identity emulator as a long-running service."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from pathlib import Path

import click

from bulkconn.emulator import CHAOS, Emulator, EmulatorOptions, Faults, RetryAfterFormat
from bulkconn.emulator.artifacts import write_config, write_job

_FAULT_NAMES = (
    "p500",
    "p503",
    "p503_bare",
    "p504",
    "p_drop",
    "p_batch_429",
    "p_batch_garbled",
    "latency_ms",
    "jitter_ms",
)


def _tenant_faults(values: tuple[str, ...], base: Faults) -> dict[str, Faults]:
    """Parse repeated ``ALIAS:NAME=VALUE`` options into per-tenant fault settings."""
    out: dict[str, Faults] = {}
    for value in values:
        alias, _, assignment = value.partition(":")
        name, _, number = assignment.partition("=")
        name = name.replace("-", "_")
        if not alias or name not in _FAULT_NAMES:
            raise click.BadParameter(f"{value!r}: expected ALIAS:NAME=VALUE with NAME one of {', '.join(_FAULT_NAMES)}")
        try:
            parsed = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: {number!r} is not a number") from None
        if parsed < 0 or (name.startswith("p") and parsed > 1):
            raise click.BadParameter(f"{value!r}: out of range")
        out[alias] = replace(out.get(alias, base), **{name: parsed})
    return out


def _probability(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be a probability between 0 and 1")
    return value


@click.group(name="emulator")
def emulator_group() -> None:
    """The local Microsoft Graph + Entra ID emulator (for rehearsals, tests and the demo)."""


@emulator_group.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--tenants", default=3, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--connectors-per-tenant", default=20, show_default=True, type=click.IntRange(0, 1_000_000))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--world",
    "world_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Load tenants, apps and connectors from this JSON file instead of generating them.",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.001, 100),
    help="Multiply every throttling window and Retry-After (0.05 runs a 20 s window in 1 s).",
)
@click.option("--patch-status", default="200", show_default=True, type=click.Choice(["200", "204"]))
@click.option("--page-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--retry-after",
    "retry_after",
    default="seconds",
    show_default=True,
    type=click.Choice([f.value for f in RetryAfterFormat]),
)
@click.option("--intune-errors", is_flag=True, help="Intune-style error messages (a JSON-encoded _version 3 string).")
@click.option("--token-lifetime", default=3599, show_default=True, type=click.IntRange(1, 86_400))
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
@click.option("--ops", default=100, show_default=True, type=click.IntRange(1), help="Operations in --write-job.")
def serve(
    host: str,
    port: int,
    tenants: int,
    connectors_per_tenant: int,
    seed: int,
    world_file: Path | None,
    time_scale: float,
    patch_status: str,
    page_size: int,
    retry_after: str,
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
    ops: int,
) -> None:
    """Serve the emulator over HTTPS until SIGINT or SIGTERM."""
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
    options = EmulatorOptions(
        host=host,
        port=port,
        tenants=tenants,
        connectors_per_tenant=connectors_per_tenant,
        seed=seed,
        world_file=world_file,
        state_dir=state_dir,
        time_scale=time_scale,
        patch_status=int(patch_status),
        page_size=page_size,
        retry_after=RetryAfterFormat(retry_after),
        intune_errors=intune_errors,
        token_lifetime_s=token_lifetime,
        faults=CHAOS if chaos else faults,
        tenant_faults=_tenant_faults(tenant_fault, CHAOS if chaos else faults),
        token_max_age_s=token_max_age,
        auto_approve_device_codes=auto_approve_device_codes,
    )
    asyncio.run(_serve(options, ready_file, config_path, job_path, ops))


async def _serve(options: EmulatorOptions, ready: Path | None, config: Path | None, job: Path | None, ops: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(options) as emu:
        if config is not None:
            secrets_dir = write_config(emu.core, emu.ca_file, config)
            click.echo(f"configuration: {config} (secrets in {secrets_dir})")
        if job is not None:
            write_job(emu.core, job, ops)
            click.echo(f"job: {job} ({ops} operations)")
        click.echo(f"bulkconn emulator serving {emu.base_url} (CA: {emu.ca_file}); Ctrl-C stops it")
        if ready is not None:
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(emu.base_url + "\n")
            tmp.replace(ready)
        await stop.wait()
    click.echo("emulator stopped")
