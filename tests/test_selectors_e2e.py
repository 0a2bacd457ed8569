"""Selectors, plan, --skip-unchanged, --backup and rollback against the emulator, as a user runs them."""

from __future__ import annotations

import copy
import re
import shlex
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkconn.emulator import EmulatorOptions, EmulatorThread
from bulkconn.emulator.artifacts import write_config
from tests.conftest import World, read_report, tenant

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "jobs" / "migrate-mail-servers.jsonl"
DOC = ROOT / "docs" / "selectors-plan-rollback.md"
MISSING = "00000000-dead-beef-0000-000000000000"


def _records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON Lines file; a line torn by a kill is left out, as readers do."""
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out


def _connectors(world: World) -> dict[str, dict[str, dict[str, Any]]]:
    """alias -> id -> connector, as the emulator holds them now (a deep copy)."""
    return {a: copy.deepcopy(t["exchangeConnectors"]) for a, t in world.emu.state()["tenants"].items()}


def _job(world: World, name: str, lines: list[dict[str, Any]]) -> str:
    (world.dir / name).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return name


@pytest.fixture
def default_world(tmp_path: Path) -> Iterator[World]:
    """`bulkconn emulator serve`'s defaults (3 tenants x 20 connectors, seed 1), listed in pages of 7."""
    with EmulatorThread(EmulatorOptions(time_scale=0.05, page_size=7)) as emu:
        yield World(emu, tmp_path, ops=1)


def test_selectors_over_several_tenants_expand_to_exactly_the_matching_objects_across_pages(
    default_world: World,
) -> None:
    """Listed in pages of 7, each line selects exactly the objects matching it, keyed LINE:TENANT:ID, in job order."""
    world = default_world
    lines: list[dict[str, Any]] = [
        {"key": "hosted", "tenant": "*", "where": {"exchangeConnectorType": "hosted"}, "patch": {"version": "h"}},
        {"tenant": "fabrikam", "select": "all", "patch": {"exchangeAlias": "all"}},
        {"tenant": "*", "where": {"exchangeConnectorType": "hosted", "status": "connected"}, "patch": {"version": "c"}},
    ]
    before = _connectors(world)
    done = world.bulkconn("run", _job(world, "sel.jsonl", lines), "--config", "bulkconn.toml", "-q")
    assert done.returncode == 0, done.stderr
    records = _records(world.dir / "sel.report.jsonl")
    for number, line in enumerate(lines, start=1):
        key = line.get("key", str(number))
        where = line.get("where", {})
        for alias in list(before) if line["tenant"] == "*" else [line["tenant"]]:
            wanted = [i for i, c in before[alias].items() if all(c[k] == v for k, v in where.items())]
            got = [r for r in records if r["type"] == "expansion" and r["line"] == number and r["tenant"] == alias]
            assert [r["id"] for r in got] == wanted and all(r["key"] == f"{key}:{alias}:{r['id']}" for r in got)
            (closing,) = [
                r for r in records if r["type"] == "expansion_done" and (r["line"], r["tenant"]) == (number, alias)
            ]
            assert (closing["count"], closing["listed"]) == (len(wanted), 20)
    expanded = [r["key"] for r in records if r["type"] == "expansion"]
    results = [r for r in records if r["type"] == "result"]
    assert sorted(r["key"] for r in results) == sorted(expanded) and {r["status"] for r in results} == {"succeeded"}
    first_expansion_write = min(i for i, r in enumerate(records) if r["type"] == "result")
    assert all(i < first_expansion_write for i, r in enumerate(records) if r["type"].startswith("expansion"))
    position = {r["key"]: i for i, r in enumerate(results)}
    for key in (k for k in expanded if k.startswith("3:")):  # matched by lines 1 and 3: line 1's write went first
        assert position[f"hosted:{key[2:]}"] < position[key]
    after = _connectors(world)
    for alias, objects in before.items():
        for object_id, obj in objects.items():
            changed = {k: v for k, v in after[alias][object_id].items() if obj.get(k) != v}
            hosted = obj["exchangeConnectorType"] == "hosted"
            expected = {"version": "c" if hosted and obj["status"] == "connected" else "h"} if hosted else {}
            expected |= {"exchangeAlias": "all"} if alias == "fabrikam" else {}
            assert changed == {k: v for k, v in expected.items() if obj.get(k) != v}, (alias, object_id)


def _simulate_plan(before: dict[str, dict[str, dict[str, Any]]], job: list[dict[str, Any]]) -> dict[str, Any]:
    """key -> (state, changes) computed without bulkconn: select with plain equality, apply lines in job order."""
    state = copy.deepcopy(before)
    plan: dict[str, Any] = {}
    for number, line in enumerate(job, start=1):
        key = line.get("key", str(number))
        aliases = list(before) if line["tenant"] == "*" else [line["tenant"]]
        for alias in aliases:
            if "id" in line:
                targets = [(key, line["id"])]
            else:
                where = line.get("where", {})
                targets = [
                    (f"{key}:{alias}:{i}", i)
                    for i, c in before[alias].items()
                    if all(c[k] == v for k, v in where.items())
                ]
            for op_key, object_id in targets:
                obj = state[alias].get(object_id)
                if obj is None:
                    plan[op_key] = ("missing", {})
                elif "patch" not in line:
                    plan[op_key] = ("action", {})
                else:
                    changes = {p: {"old": obj.get(p), "new": v} for p, v in line["patch"].items() if obj.get(p) != v}
                    plan[op_key] = ("change" if changes else "unchanged", changes)
                    obj.update(line["patch"])
    return plan


def test_plan_sends_no_write_and_its_diff_is_exact(default_world: World) -> None:
    """plan over selectors, a missing id, a satisfied patch and a sync: exact old -> new per object, no write."""
    world = default_world
    before = _connectors(world)
    some = next(iter(before["contoso"].values()))
    job = [orjson.loads(line) for line in EXAMPLE.read_bytes().splitlines()]
    job += [
        {"tenant": "contoso", "id": MISSING, "patch": {"version": "1"}},
        {"tenant": "contoso", "id": some["id"], "patch": {"version": some["version"]}},
        {"tenant": "northwind", "id": next(iter(before["northwind"])), "action": "sync", "syncType": "deltaSync"},
    ]
    done = world.bulkconn("plan", _job(world, "p.jsonl", job), "--config", "bulkconn.toml", "--out", "plan.jsonl")
    assert done.returncode == 1, done.stderr  # a missing object wins over "changes pending"
    assert world.emu.stats()["writes_total"] == 0 and _connectors(world) == before
    records = _records(world.dir / "plan.jsonl")
    got = {r["key"]: (r["state"], r["changes"]) for r in records if r["type"] == "plan"}
    assert got == _simulate_plan(before, job)
    assert records[-1]["counts"] == {"change": 36, "unchanged": 1, "action": 1, "missing": 1, "error": 0}
    assert f"  {MISSING} (line 4): not found (404)" in done.stdout
    assert done.stdout.splitlines()[-1] == "Plan: 36 to change, 1 actions to send, 1 unchanged, 1 not found, 0 errors."


def test_skip_unchanged_saves_exactly_the_writes_it_should(world: World) -> None:
    """20 updates of which 8 already hold their value: 12 writes, 8 skipped (Unchanged); a rerun writes nothing."""
    connectors = list(_connectors(world)["contoso"].values())
    lines = [
        {"tenant": "contoso", "id": c["id"], "patch": {"serverName": c["serverName"] if n < 8 else f"new{n}.example"}}
        for n, c in enumerate(connectors)
    ]
    job = _job(world, "s.jsonl", lines)
    done = world.bulkconn("run", job, "--config", "bulkconn.toml", "-q", "--skip-unchanged")
    assert done.returncode == 0, done.stderr
    assert world.emu.stats()["writes_total"] == 12
    _, results, _ = read_report(world.dir / "s.report.jsonl")
    skipped = {r["id"] for r in results if r["status"] == "skipped"}
    assert skipped == {c["id"] for c in connectors[:8]}
    assert all(r["reason"]["code"] == "Unchanged" for r in results if r["status"] == "skipped")
    assert all("reason" not in r for r in results if r["status"] == "succeeded")
    again = world.bulkconn("run", job, "--config", "bulkconn.toml", "-q", "--skip-unchanged", "--report", "again.jsonl")
    assert again.returncode == 0 and world.emu.stats()["writes_total"] == 12


def test_an_object_changed_after_the_run_is_a_conflict_left_alone_unless_forced(world: World) -> None:
    """Backup run, someone else edits one object, rollback: that object is skipped (Conflict) and keeps the edit,
    every other object is back to its state before the run; --force then restores the edited one too."""
    before = _connectors(world)
    run = world.bulkconn(
        "run",
        _job(
            world,
            "m.jsonl",
            [{"tenant": "*", "select": "all", "patch": {"serverName": "exo.example", "exchangeAlias": "x"}}],
        ),
        "--config",
        "bulkconn.toml",
        "-q",
        "--backup",
    )
    assert run.returncode == 0, run.stderr
    victim = next(iter(before["contoso"]))
    other = _job(world, "other.jsonl", [{"tenant": "contoso", "id": victim, "patch": {"serverName": "someone.else"}}])
    assert world.bulkconn("run", other, "--config", "bulkconn.toml", "-q").returncode == 0
    made = world.bulkconn("rollback", "m.report.jsonl", "-o", "undo.jsonl")
    assert made.returncode == 0 and "40 object(s) to restore (40 operation(s))" in made.stderr
    undo = world.bulkconn("run", "undo.jsonl", "--config", "bulkconn.toml", "-q")
    assert undo.returncode == 1, undo.stderr  # a conflict left alone: the asked state was not reached
    _, results, _ = read_report(world.dir / "undo.report.jsonl")
    (conflict,) = [r for r in results if r["status"] == "skipped"]
    assert conflict["id"] == victim and conflict["reason"]["code"] == "Conflict"
    assert '"someone.else"' in conflict["reason"]["message"] and "--force" in conflict["reason"]["message"]
    after = _connectors(world)
    assert after["contoso"][victim]["serverName"] == "someone.else"
    assert {a: {i: c for i, c in o.items() if i != victim} for a, o in after.items()} == {
        a: {i: c for i, c in o.items() if i != victim} for a, o in before.items()
    }
    forced = world.bulkconn("run", "undo.jsonl", "--config", "bulkconn.toml", "-q", "--force", "--report", "f.jsonl")
    assert forced.returncode == 0, forced.stderr
    assert _connectors(world) == before


def _documented_commands() -> list[tuple[list[str], int | None]]:
    """The worked example's shell block: (arguments after `bulkconn`, the exit code its comment states)."""
    block = DOC.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for raw in block.splitlines():
        command, _, comment = raw.partition("#")
        stated = re.search(r"exit (\d+)", comment)
        commands.append((shlex.split(command)[1:], int(stated.group(1)) if stated else None))
    return commands


def test_the_documented_migration_runs_as_written_and_its_rollback_restores_every_object(tmp_path: Path) -> None:
    """docs/selectors-plan-rollback.md's commands, run as written against `emulator serve`'s defaults: each ends
    with the exit code the page states, and after the undo every connector equals its state before, field by field."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    commands = _documented_commands()
    serve, rest = commands[0], commands[1:]
    assert serve[0][:2] == ["emulator", "serve"] and "--write-config" in serve[0]  # the emulator this test starts
    with EmulatorThread(EmulatorOptions(time_scale=0.05)) as emu:
        world = World(emu, tmp_path, ops=1)
        before = _connectors(world)
        for args, stated in rest:
            done = world.bulkconn(*args)
            assert done.returncode == (0 if stated is None else stated), (args, done.stdout, done.stderr)
        assert _connectors(world) == before


def test_an_expansion_survives_kill_9_and_the_resume_works_on_exactly_the_recorded_objects(tmp_path: Path) -> None:
    """kill -9 mid-run, then the tenant changes (a recorded object stops matching, another starts, one is added):
    --resume lists nothing again and finishes exactly the objects the report recorded, each once."""
    options = EmulatorOptions(tenants=3, connectors_per_tenant=40, time_scale=0.25, seed=9, page_size=7)
    with EmulatorThread(options) as emu:
        world = World(emu, tmp_path, ops=1)
        write_config(
            emu.core, emu.ca_file, world.config, overrides={a: {"writes_per_20s": 40} for a in _connectors(world)}
        )
        lines = [
            {"key": "all", "tenant": "*", "select": "all", "patch": {"exchangeAlias": "moved"}},
            {
                "key": "hosted",
                "tenant": "contoso",
                "where": {"exchangeConnectorType": "hosted"},
                "patch": {"version": "9"},
            },
        ]
        job = _job(world, "k.jsonl", lines)
        report = world.dir / "k.report.jsonl"
        proc = world.start("run", job, "--config", "bulkconn.toml", "-q")
        deadline = time.monotonic() + 60
        while (
            sum(1 for line in (report.read_bytes().splitlines() if report.exists() else []) if b'"result"' in line) < 10
        ):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        first = [r for r in _records(report) if r["type"] in ("expansion", "expansion_done")]
        recorded = {r["key"] for r in first if r["type"] == "expansion"}
        assert len([r for r in _records(report) if r["type"] == "result"]) < len(recorded)  # killed mid-run
        hosted = [r["id"] for r in first if r["type"] == "expansion" and r["line"] == 2]
        store = tenant(emu, "contoso").connectors
        newcomer = next(c for c in store.values() if c["exchangeConnectorType"] not in ("hosted", "dedicated"))
        store[hosted[0].lower()]["exchangeConnectorType"] = "dedicated"  # a new listing would not select it
        newcomer["exchangeConnectorType"] = "hosted"  # ... but would select this one
        added = dict(newcomer, id="11111111-2222-3333-4444-555555555555", exchangeAlias="added")
        tenant(emu, "contoso").add("exchangeConnectors", added)
        resumed = world.bulkconn("run", job, "--config", "bulkconn.toml", "-q", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        again = world.bulkconn("run", job, "--config", "bulkconn.toml", "-q", "--resume")
        assert again.returncode == 0 and "nothing to resume" in again.stderr
    records = _records(report)
    assert [r for r in records if r["type"] in ("expansion", "expansion_done")] == first  # nothing listed again
    results = [r for r in records if r["type"] == "result"]
    assert sorted(r["key"] for r in results) == sorted(recorded) and {r["status"] for r in results} == {"succeeded"}
    assert store[hosted[0].lower()]["version"] == "9" and newcomer["version"] != "9"
    assert store[added["id"]]["exchangeAlias"] == "added"


def test_export_writes_a_job_of_the_matching_objects_that_runs_as_is(world: World) -> None:
    """export --where: one line per matching object with its current writable values; run unchanged with
    --skip-unchanged it changes nothing and costs no write."""
    before = _connectors(world)
    done = world.bulkconn("export", "--config", "bulkconn.toml", "--where", "status=connected", "-o", "e.jsonl")
    assert done.returncode == 0, done.stderr
    lines = _records(world.dir / "e.jsonl")
    wanted = {(a, i) for a, objects in before.items() for i, c in objects.items() if c["status"] == "connected"}
    assert {(x["tenant"], x["id"]) for x in lines} == wanted and len(lines) == len(wanted)
    for line in lines:
        current = before[line["tenant"]][line["id"]]
        assert line["patch"] == {k: v for k, v in current.items() if k not in ("id", "@odata.type")}
    assert f"{len(wanted)} object(s) from 2 tenant(s)" in done.stderr
    again = world.bulkconn("run", "e.jsonl", "--config", "bulkconn.toml", "-q", "--skip-unchanged")
    assert again.returncode == 0, again.stderr
    _, results, _ = read_report(world.dir / "e.report.jsonl")
    assert {r["status"] for r in results} == {"skipped"} and world.emu.stats()["writes_total"] == 0
