"""Shared fixtures: an in-process emulator on a real loopback HTTPS socket, and clients that trust it."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from subprocess import PIPE, CompletedProcess, Popen
from subprocess import run as run_process
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from bulkconn.config import Config, load_config
from bulkconn.emulator import Emulator, EmulatorOptions, EmulatorThread
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.emulator.state import Tenant
from bulkconn.engine import EngineSettings
from bulkconn.retry import RetryPolicy
from bulkconn.runner import RunOptions, RunResult, execute

EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with the given options; every one is stopped at the end of the test."""
    started: list[Emulator] = []

    async def start(**options: Any) -> Emulator:
        emu = Emulator(replace(EmulatorOptions(tenants=2, connectors_per_tenant=5), **options))
        await emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        await emu.stop()


@pytest.fixture
async def emu(make_emulator: EmulatorFactory) -> Emulator:
    return await make_emulator()


def ssl_context(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(emu.ca_file))


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as session:
        yield session


def tenant(emu: Emulator, alias: str) -> Tenant:
    return next(t for t in emu.core.world.tenants.values() if t.alias == alias)


async def get_token(
    session: aiohttp.ClientSession,
    emu: Emulator,
    alias: str = "contoso",
    *,
    app: str = "bulkconn",
    scope: str = "https://graph.microsoft.com/.default",
) -> str:
    """A client-credentials token over the real token endpoint (form POST, as any OAuth client does)."""
    t = tenant(emu, alias)
    registered = next(a for a in t.apps.values() if a.display_name == app)
    async with session.post(
        f"{emu.base_url}/{t.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": registered.client_id,
            "client_secret": registered.secrets[0],
            "scope": scope,
        },
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


class Rehearsal:
    """An emulator plus the configuration it wrote, and helpers to write jobs and read reports."""

    def __init__(self, emu: Emulator, directory: Path, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.emu = emu
        self.dir = directory
        self.config_path = directory / "bulkconn.toml"
        write_config(emu.core, emu.ca_file, self.config_path, overrides=overrides or {})

    def config(self) -> Config:
        return load_config(self.config_path)

    def connectors(self, alias: str) -> list[dict[str, Any]]:
        return list(tenant(self.emu, alias).connectors.values())

    def job(self, lines: list[dict[str, Any]], name: str = "job.jsonl") -> Path:
        path = self.dir / name
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        return path

    def patch_all(
        self, aliases: list[str], make: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return [
            {"tenant": alias, "id": c["id"], "patch": make(alias, c)}
            for alias in aliases
            for c in self.connectors(alias)
        ]

    async def run(
        self, job: Path, *, report: str = "report.jsonl", on_tick: Callable[..., None] = lambda p: None, **options: Any
    ) -> RunResult:
        settings = options.pop("settings", EngineSettings(seed=1, policy=FAST_RETRY))
        return await execute(
            job,
            self.config(),
            RunOptions(report=self.dir / report, settings=settings, **options),
            install_signals=False,
            on_tick=on_tick,
        )


FAST_RETRY = RetryPolicy(backoff_base_s=0.02, backoff_cap_s=0.2, max_attempts=30, time_budget_s=60)


def read_report(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue  # a torn line from a crash; readers ignore it
    header = next(line for line in lines if line["type"] == "header")
    results = [line for line in lines if line["type"] == "result"]
    summary = [line for line in lines if line["type"] == "summary"][-1]
    return header, results, summary


@pytest.fixture
async def rehearsal(make_emulator: EmulatorFactory, tmp_path: Path) -> Callable[..., Awaitable[Rehearsal]]:
    async def start(overrides: dict[str, dict[str, Any]] | None = None, **options: Any) -> Rehearsal:
        options.setdefault("time_scale", 0.05)
        emu = await make_emulator(**options)
        return Rehearsal(emu, tmp_path, overrides)

    return start


class World:
    """An emulator in a background thread, its configuration and a sample job, for CLI subprocesses."""

    def __init__(self, emu: Emulator, directory: Path, ops: int = 40) -> None:
        self.emu, self.dir = emu, directory
        self.config = directory / "bulkconn.toml"
        write_config(emu.core, emu.ca_file, self.config)
        self.job = directory / "job.jsonl"
        write_job(emu.core, self.job, ops)

    @staticmethod
    def env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BULKCONN_"))}

    def bulkconn(
        self, *args: str, timeout: float = 120, subprocess: bool = False, env: dict[str, str] | None = None
    ) -> CompletedProcess[str]:
        """Run the CLI to the end in this process (fast), or with ``subprocess=True`` as ``python -m bulkconn``.

        In process, the environment and working directory are the subprocess's, and an exception escaping the
        CLI is printed as Python would print it, so "no traceback" assertions hold either way. ``env`` adds
        variables to the environment.
        """
        if not subprocess:
            return self._in_process(list(args), env or {})
        return run_process(
            [sys.executable, "-m", "bulkconn", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            env={**self.env(), **(env or {})},
            check=False,
        )

    def _in_process(self, args: list[str], env: dict[str, str]) -> CompletedProcess[str]:
        hidden: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("AZURE_", "BULKCONN_"))}
        with contextlib.chdir(self.dir):
            result = CliRunner().invoke(cli, args, env={**hidden, **env}, catch_exceptions=True)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert result.exc_info is not None
            stderr += "".join(traceback.format_exception(*result.exc_info))
        return CompletedProcess(["bulkconn", *args], result.exit_code, result.stdout, stderr)

    def start(self, *args: str, prelude: str = "") -> Popen[str]:
        """Start ``python -m bulkconn ARGS``; with a ``prelude``, that Python code runs first in the process."""
        return Popen(
            launch(prelude, *args),
            stdout=PIPE,
            stderr=PIPE,
            text=True,
            cwd=self.dir,
            env=self.env(),
        )


# What Windows' event loops do (asyncio's platform notes): no add_signal_handler. bulkconn must fall back.
FORCE_SIGNAL_FALLBACK = """
import asyncio
def _refuse(self, *args, **kwargs):
    raise NotImplementedError
asyncio.SelectorEventLoop.add_signal_handler = _refuse
"""


def launch(prelude: str, *args: str) -> list[str]:
    """The argv of ``python -m bulkconn ARGS``, running ``prelude`` (Python code) first when given."""
    if not prelude:
        return [sys.executable, "-m", "bulkconn", *args]
    return [sys.executable, "-c", f"{prelude}\nfrom bulkconn.cli import main\nmain()\n", *args]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    options = EmulatorOptions(tenants=2, connectors_per_tenant=20, time_scale=0.05, auto_approve_device_codes=True)
    with EmulatorThread(options) as emu:
        yield World(emu, tmp_path)


E2E_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests get a longer per-test timeout than the 10 s of unit tests (pyproject.toml)."""
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
