"""The shipped example jobs, hostile environments (CA bundle variables), and emulator CLI parsing."""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import click
import orjson
import pytest

from bulkconn.cli.emulator import _tenant_faults
from bulkconn.config import load_config
from bulkconn.emulator import Emulator, EmulatorOptions, EmulatorThread, Faults
from bulkconn.emulator.artifacts import write_config
from bulkconn.engine import EngineSettings
from bulkconn.runner import RunOptions, execute
from tests.conftest import FAST_RETRY, FORCE_SIGNAL_FALLBACK, World, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

JOBS = sorted((Path(__file__).parent.parent / "jobs").glob("*.jsonl"))
SELECTED = {"migrate-mail-servers.jsonl": 36}  # operations a selector job expands to (docs/selectors-plan-rollback.md)


@pytest.mark.parametrize("job", JOBS, ids=[j.name for j in JOBS])
async def test_example_jobs_run_unchanged_against_the_default_emulator(job: Path, tmp_path: Path) -> None:
    """Each jobs/*.jsonl succeeds against `emulator serve`'s defaults, and every PATCH lands."""
    lines = [orjson.loads(x) for x in job.read_bytes().splitlines()]  # noqa: ASYNC240 - a tiny file, before any I/O
    async with Emulator(EmulatorOptions(time_scale=0.05, state_dir=tmp_path / "state")) as emu:
        write_config(emu.core, emu.ca_file, tmp_path / "bulkconn.toml")
        config = load_config(tmp_path / "bulkconn.toml")
        options = RunOptions(report=tmp_path / "r.jsonl", settings=EngineSettings(seed=1, policy=FAST_RETRY))
        result = await execute(job, config, options, install_signals=False)
        operations = SELECTED.get(job.name, len([x for x in lines if "defaults" not in x]))
        assert result.counts == Counter({"succeeded": operations})
        defaults = lines[0].get("defaults", {})
        state = emu.state()["tenants"]
        for line in lines:
            patch = {**defaults.get("patch", {}), **line.get("patch", {})}
            if "id" in line and defaults.get("action") != "sync":
                entity = state[line.get("tenant", defaults.get("tenant"))]["exchangeConnectors"][line["id"]]
                assert all(entity[k] == v for k, v in patch.items())


async def test_ca_bundle_wins_over_requests_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE pointing elsewhere do not break a tenant with its own ca_bundle."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "elsewhere.pem"))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "elsewhere.pem"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a dead proxy must not be used for loopback
    async with Emulator(
        EmulatorOptions(tenants=1, connectors_per_tenant=5, time_scale=0.05, state_dir=tmp_path / "state")
    ) as emu:
        write_config(emu.core, emu.ca_file, tmp_path / "bulkconn.toml")
        job = tmp_path / "job.jsonl"
        job.write_bytes(
            b"".join(
                orjson.dumps({"tenant": "contoso", "id": c["id"], "patch": {"version": "2"}}) + b"\n"
                for c in emu.state()["tenants"]["contoso"]["exchangeConnectors"].values()
            )
        )
        result = await execute(
            job, load_config(tmp_path / "bulkconn.toml"), RunOptions(report=tmp_path / "r.jsonl"), install_signals=False
        )
    assert result.counts == Counter({"succeeded": 5})


@pytest.mark.parametrize("prelude", ["", FORCE_SIGNAL_FALLBACK], ids=["loop-handlers", "signal-module-fallback"])
def test_second_signal_stops_at_once(tmp_path: Path, prelude: str) -> None:
    """During the drain a second SIGINT stops at once (exit 130); what was in flight is redone on resume.

    Also with the event loop's signal handlers refused, as on Windows (the signal-module fallback).
    """
    slow = EmulatorOptions(tenants=2, connectors_per_tenant=20, time_scale=0.5, faults=Faults(latency_ms=8000))
    with EmulatorThread(slow) as emu:
        world = World(emu, tmp_path, ops=40)
        args = ("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--drain-timeout", "60")
        proc = world.start(*args, prelude=prelude)
        deadline = time.monotonic() + 60
        while not emu.core.stats.connections:  # requests are in flight (each takes 4 s to answer)
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None  # draining: waiting for the slow answers
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - stopped_at < 3.5  # did not wait for the 4 s answers, let alone the drain timeout
        assert "Traceback" not in err
        _, results, summary = read_report(tmp_path / "job.report.jsonl")
        assert results == [] and summary["interrupted"] is True
        emu.core.options = replace(slow, faults=Faults())  # the service recovers
        resumed = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        _, results, _ = read_report(tmp_path / "job.report.jsonl")
        assert sorted(Counter(x["key"] for x in results).values()) == [1] * 40


def test_tenant_fault_option_parsing() -> None:
    """--tenant-fault ALIAS:NAME=VALUE builds per-tenant faults on top of the global ones; mistakes are refused."""
    base = Faults(p500=0.1)
    parsed = _tenant_faults(("contoso:p503=0.5", "contoso:latency-ms=20", "fabrikam:p_drop=0.1"), base)
    assert parsed["contoso"] == Faults(p500=0.1, p503=0.5, latency_ms=20)
    assert parsed["fabrikam"].p_drop == 0.1
    for bad in ("contoso", "contoso:colour=1", "contoso:p500=2", "contoso:p500=x"):
        with pytest.raises(click.BadParameter):
            _tenant_faults((bad,), base)
