"""Nothing leaked, nothing crossed: a full `--debug` run greps every artifact for every credential the emulator
saw or issued, and two tenants whose objects share ids are each changed only through their own token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.emulator.state import generate_world
from bulkconn.emulator.tls import make_client_certificate
from bulkconn.private import write_private
from tests.conftest import World, read_report

pytestmark = pytest.mark.e2e

CONNECTORS = 30


def _world_file(path: Path, certificate_pem: str) -> Path:
    """contoso and fabrikam; fabrikam's connectors carry contoso's ids; fabrikam's app signs in with a certificate."""
    world = generate_world(tenants=2, connectors_per_tenant=CONNECTORS, seed=4)
    contoso, fabrikam = (t.to_json() for t in world.tenants.values())
    for mine, theirs in zip(fabrikam["exchangeConnectors"], contoso["exchangeConnectors"], strict=True):
        mine["id"] = theirs["id"]
    writer = next(app for app in fabrikam["apps"] if app["display_name"] == "bulkconn")
    writer["certificates"] = [certificate_pem]
    path.write_bytes(orjson.dumps({"tenants": [contoso, fabrikam]}))
    return path


def _use_certificate(config: Path, alias: str, pem: Path) -> None:
    out, inside = [], False
    for line in config.read_text().splitlines():
        if line.startswith("[tenants."):
            inside = line == f"[tenants.{alias}]"
        out.append(f'certificate_file = "{pem}"' if inside and line.startswith("client_secret_file") else line)
    config.write_text("\n".join(out) + "\n")


def _job(world: World) -> list[dict[str, Any]]:
    """Every connector of both tenants patched to a value naming its tenant; a sync of every fifth one."""
    lines: list[dict[str, Any]] = []
    state = world.emu.state()["tenants"]
    for alias in ("contoso", "fabrikam"):
        for n, object_id in enumerate(state[alias]["exchangeConnectors"]):
            lines.append({"tenant": alias, "id": object_id, "patch": {"serverName": f"{alias}-{n}.example"}})
            if n % 5 == 0:
                lines.append({"tenant": alias, "id": object_id, "action": "sync", "syncType": "deltaSync"})
    return lines


@pytest.fixture
def shared_ids(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    key, cert = make_client_certificate("fabrikam-bulkconn")
    pem = tmp_path / "fabrikam.pem"
    pem.write_text(key + cert)
    pem.chmod(0o600)
    world_file = _world_file(tmp_path / "world.json", cert)
    # Tokens older than 1 s are refused: the run goes through several tokens per tenant.
    options = EmulatorOptions(world_file=world_file, time_scale=0.1, token_max_age_s=1.0)
    with EmulatorThread(options) as emu:
        world = World(emu, tmp_path)
        _use_certificate(world.config, "fabrikam", pem)
        world.job.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in _job(world)))
        yield world, pem


def _credentials(world: World, pem: Path) -> set[str]:
    """Every secret the run held or saw: the client secret, the key's lines, every token and assertion (whole and
    their signatures, so that a cut-off copy is found too)."""
    found = {(world.dir / "bulkconn.secrets" / "contoso.secret").read_text().strip()}
    key_pem = pem.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    found |= {line for line in key_pem.splitlines() if len(line) >= 40}
    seen = world.emu.tokens()
    for jwt in [*seen["issued"], *seen["client_assertions"]]:
        found |= {jwt, jwt.rsplit(".", 1)[-1]} if jwt.count(".") == 2 else {jwt}
    return {s for s in found if len(s) >= 16}


def _artifacts(world: World, inputs: set[Path]) -> dict[str, bytes]:
    """Every file under the run's directory (the HOME included) that bulkconn may have written."""
    return {
        str(path): path.read_bytes()
        for path in world.dir.rglob("*")
        if path.is_file() and path not in inputs and "bulkconn.secrets" not in path.parts
    }


def test_debug_run_leaks_no_secret_key_assertion_or_token(shared_ids: tuple[World, Path]) -> None:
    """`--debug` run, summary and auth check: no credential in stdout, stderr, report, logs or any file."""
    world, pem = shared_ids
    home = world.dir / "home"
    home.mkdir()
    env = World.env() | {"HOME": str(home), "TMPDIR": str(world.dir / "home")}
    outputs = []
    for args in (
        ["--debug", "run", "job.jsonl", "--config", "bulkconn.toml", "-q"],
        ["--debug", "report", "summary", "job.report.jsonl"],
        ["--debug", "auth", "check", "--config", "bulkconn.toml"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "bulkconn", *args],
            capture_output=True,
            cwd=world.dir,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode in (0, 1), proc.stderr.decode()
        outputs += [proc.stdout, proc.stderr]
    assert b" PATCH https://" in outputs[1] or b"POST https://" in outputs[1]  # --debug really logged requests
    secrets = _credentials(world, pem)
    assert len(secrets) > 10
    issued = world.emu.tokens()
    assert len(issued["issued"]) >= 4 and len(issued["client_assertions"]) >= 2  # several tokens per tenant
    inputs = {world.config, world.job, pem, world.dir / "world.json"}
    everything = dict(enumerate(outputs)) | _artifacts(world, inputs)
    assert str(world.dir / "job.report.jsonl") in everything
    leaks = [
        (where, secret[:12]) for where, text in everything.items() for secret in secrets if secret.encode() in text
    ]
    assert leaks == []


def test_each_operation_uses_its_own_tenants_token_even_when_ids_are_shared(shared_ids: tuple[World, Path]) -> None:
    """Same connector ids in two tenants: each object gets its own tenant's value; no cross-tenant request at all."""
    world, _ = shared_ids
    proc = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q")
    assert proc.returncode == 0, proc.stderr
    state = world.emu.state()["tenants"]
    assert set(state["contoso"]["exchangeConnectors"]) == set(state["fabrikam"]["exchangeConnectors"])
    for alias in ("contoso", "fabrikam"):
        for n, entity in enumerate(state[alias]["exchangeConnectors"].values()):
            assert entity["serverName"] == f"{alias}-{n}.example"
    stats = world.emu.stats()
    assert stats["cross_tenant_attempts"] == 0
    for alias in ("contoso", "fabrikam"):
        assert sorted(stats["tenants"][alias]["patches"].values()) == [1] * CONNECTORS
        assert sum(stats["tenants"][alias]["syncs"].values()) == CONNECTORS // 5
    _, results, _ = read_report(world.dir / "job.report.jsonl")
    assert {r["status"] for r in results} == {"succeeded"}


def test_token_cache_file_is_owner_only_even_over_a_leftover(tmp_path: Path) -> None:
    """The device-code token cache is written 0600 through a fresh temporary file, never a leftover's wider mode."""
    leftover = tmp_path / "cache.json.tmp"
    leftover.write_text("{}")
    leftover.chmod(0o644)
    old = os.umask(0o022)
    try:
        write_private(tmp_path / "cache.json", '{"AccessToken": {}}')
    finally:
        os.umask(old)
    assert (tmp_path / "cache.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache.json")] == []
