"""Shards for real: the Kubernetes Indexed Job simulated on this machine, and ``run --processes N``.

Every test ends with the same checks as a single process's crash tests: the (merged) report holds exactly
one final result per operation, the emulator applied every change, no sync was sent twice, and, what only
shards can break, no tenant was written by two shards (the emulator counts each tenant's requests by
User-Agent, in which a shard names itself).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bulkconn.config import load_config
from bulkconn.emulator import Emulator, EmulatorOptions, EmulatorThread
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.jobscan import scan_job
from bulkconn.shardenv import INDEX_ENV
from bulkconn.shards import Partition, operation_counts, partition
from tests.conftest import World, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
SHARD_AGENT = re.compile(r"shard/(\d+)-of-(\d+)")


def clean_env() -> dict[str, str]:
    return World.env()


def results_in(paths: list[Path]) -> int:
    return sum(p.read_bytes().count(b'"type":"result"') for p in paths if p.exists())


def wait_for_results(paths: list[Path], count: int, procs: list[subprocess.Popen[Any]], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while results_in(paths) < count:
        assert all(p.poll() is None for p in procs), "a process ended before the point it was to be stopped at"
        assert time.monotonic() < deadline, "the shards made no progress"
        time.sleep(0.02)


def partition_of(job: Path, config: Path, count: int) -> Partition:
    scan = scan_job(job, list(load_config(config).tenants), on_invalid=lambda item: None)
    return partition(operation_counts(scan), count, job_sha256=scan.sha256)


def assert_done_once(emu: Emulator, job: Path, merged: Path, plan: Partition) -> None:
    """One final result per operation; every change applied; no sync twice; each tenant written by its shard only."""
    header, results, summary = read_report(merged)
    lines = [orjson.loads(raw) for raw in job.read_bytes().splitlines()]
    per_key = Counter(r["key"] for r in results)
    assert sorted(per_key, key=int) == [str(n) for n in range(1, len(lines) + 1)]
    assert set(per_key.values()) == {1}
    assert header["merged"]["shards"] == plan.count and header["merged"]["partition"] == plan.fingerprint
    assert not summary["interrupted"]
    status = {r["key"]: r["status"] for r in results}
    state = emu.state()["tenants"]
    for number, line in enumerate(lines, start=1):
        if "patch" in line:
            assert status[str(number)] == "succeeded"
            entity = state[line["tenant"]]["exchangeConnectors"][line["id"]]
            assert all(entity[k] == v for k, v in line["patch"].items())
        else:
            assert status[str(number)] in ("succeeded", "uncertain")
    stats = emu.stats()["tenants"]
    for tenant, shard in plan.assignment.items():
        entry = stats[tenant]
        assert all(count == 1 for count in entry["syncs"].values()), f"a sync of {tenant} was sent twice"
        writers = {m.groups() for agent in entry["user_agents"] if (m := SHARD_AGENT.search(agent))}
        assert writers == {(str(shard), str(plan.count))}, f"{tenant} was written by {writers}"


# -- Kubernetes, simulated ---------------------------------------------------------------------------------
def manifest(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert isinstance(document, dict)
    return document


def only_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


class Node:
    """This machine as a Kubernetes node: the pods' mount paths mapped to folders, the image's command run locally."""

    def __init__(self, root: Path) -> None:
        self.mounts = {"/job": root / "job", "/reports": root / "reports", "/config": root / "config"}
        for folder in self.mounts.values():
            folder.mkdir()
        self.home = root / "home"  # the image's WORKDIR
        self.home.mkdir()

    def path(self, value: str) -> str:
        """A path inside the pod, as seen on this machine."""
        for inside, outside in self.mounts.items():
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    def pod_env(self, container: dict[str, Any], index: int) -> dict[str, str]:
        """The container's env: the completion index from the Job's annotation, values with their paths mapped."""
        env = clean_env()
        for item in container.get("env", []):
            field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            if field == "metadata.annotations['batch.kubernetes.io/job-completion-index']":
                assert item["name"] == INDEX_ENV  # the variable `run --shards N` reads
                env[item["name"]] = str(index)
            else:
                env[item["name"]] = self.path(str(item["value"]))
        return env

    def start(self, container: dict[str, Any], index: int | None = None) -> subprocess.Popen[bytes]:
        """Start the image's entry point (`bulkconn`) with the container's args, as the kubelet would."""
        env = self.pod_env(container, index) if index is not None else clean_env()
        args = [
            self.path(re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg))
            for arg in container["args"]
        ]
        with (self.home / f"pod-{index if index is not None else 'merge'}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "bulkconn", *args], cwd=self.home, env=env, stdout=log, stderr=log
            )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Emulator, Node]]:
    """8 tenants x 40 connectors at a 5 s window and 20 writes per window: each of 4 shards needs two windows, so a
    pod killed after its first results is killed mid-run however fast the client is."""
    options = EmulatorOptions(tenants=8, connectors_per_tenant=40, time_scale=0.25, seed=14, writes_per_app=20)
    with EmulatorThread(options) as emu:
        yield emu, Node(tmp_path)


def test_kubernetes_indexed_job_survives_a_killed_pod_and_the_merge_job_combines_the_shards(
    cluster: tuple[Emulator, Node],
) -> None:
    """job.yaml's command line per index (JOB_COMPLETION_INDEX), one pod SIGKILLed and replaced, then merge-job.yaml."""
    emu, node = cluster
    shards_job, merge_job = manifest("job.yaml"), manifest("merge-job.yaml")
    container = only_container(shards_job)
    count = int(shards_job["spec"]["completions"])
    assert int(shards_job["spec"]["parallelism"]) == count
    config = Path(node.path("/config/bulkconn.toml"))
    write_config(emu.core, emu.ca_file, config)
    job = Path(node.path("/job/job.jsonl"))
    write_job(emu.core, job, 320)
    job.parent.chmod(0o555)  # mounted read-only in the pod
    plan = partition_of(job, config, count)
    reports = [Path(node.path(f"/reports/job.shard-{k}-of-{count}.report.jsonl")) for k in range(count)]

    pods = [node.start(container, index) for index in range(count)]
    victim = 1
    wait_for_results([reports[victim]], 15, [pods[victim]])
    pods[victim].send_signal(signal.SIGKILL)
    assert pods[victim].wait(30) == -signal.SIGKILL
    pods[victim] = node.start(container, victim)  # backoffLimitPerIndex: the same index again, same command
    codes = [pod.wait(90) for pod in pods]
    logs = {p.name: p.read_text() for p in node.home.glob("pod-*.log")}
    assert all(code in (0, 1) for code in codes), logs  # 1 only for a sync left uncertain by the kill
    for index, report in enumerate(reports):
        headers = [orjson.loads(x) for x in report.read_bytes().splitlines() if b'"type":"header"' in x]
        assert {(h["shard"]["index"], h["shard"]["partition"]) for h in headers} == {(index, plan.fingerprint)}
        assert len(headers) == (2 if index == victim else 1)

    merge = node.start(only_container(merge_job))
    assert merge.wait(60) == 0, (node.home / "pod-merge.log").read_text()
    assert_done_once(emu, job, Path(node.path("/reports/job.report.jsonl")), plan)


# -- run --processes N -------------------------------------------------------------------------------------
def start_processes(world: World, *args: str) -> subprocess.Popen[str]:
    return world.start("run", "job.jsonl", "--config", "bulkconn.toml", "--processes", "2", "-q", *args)


def shard_paths(world: World, count: int = 2) -> list[Path]:
    return [world.dir / f"job.shard-{k}-of-{count}.report.jsonl" for k in range(count)]


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    """3 tenants x 100 operations at 40 writes per 5 s window: a --processes 2 run of several seconds to interrupt
    (the pacer fills each window to the limit, so at Intune's 100 each tenant would be done in one window)."""
    options = EmulatorOptions(tenants=3, connectors_per_tenant=100, time_scale=0.25, seed=9, writes_per_app=40)
    with EmulatorThread(options) as emu:
        yield World(emu, tmp_path, ops=300)


def test_processes_ctrl_c_drains_every_shard_and_the_one_resume_command_finishes(slow_world: World) -> None:
    """Ctrl-C: every shard drains, exit 130, one resume command (--processes 2 --resume), which merges at the end."""
    proc = start_processes(slow_world)
    for path in shard_paths(slow_world):  # both under way, so that both have something to drain
        wait_for_results([path], 10, [proc])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    for path in shard_paths(slow_world):
        assert read_report(path)[2]["interrupted"] is True  # each drained and wrote its summary
    assert not (slow_world.dir / "job.report.jsonl").exists()
    (command,) = [line.strip() for line in err.splitlines() if line.strip().startswith("bulkconn run ")]
    argv = shlex.split(command)
    assert argv[argv.index("--processes") + 1] == "2" and "--resume" in argv
    resumed = slow_world.bulkconn(*argv[1:], "-q", subprocess=True, timeout=120)
    assert resumed.returncode in (0, 1), resumed.stderr
    config = slow_world.config
    assert_done_once(
        slow_world.emu, slow_world.job, slow_world.dir / "job.report.jsonl", partition_of(slow_world.job, config, 2)
    )


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the shard processes through Linux /proc")
def test_a_crashed_shard_is_named_with_its_own_resume_command_while_the_other_finishes(slow_world: World) -> None:
    """SIGKILL one child: the other finishes, exit 6, the dead shard's own resume command; then all merge."""
    proc = start_processes(slow_world)
    wait_for_results(shard_paths(slow_world), 20, [proc])
    victim = next(c for c in children(proc.pid) if b"--shard\x001/2" in Path(f"/proc/{c}/cmdline").read_bytes())
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 6, err
    assert "shard 1/2 crashed (killed by SIGKILL); resume it alone with:" in err
    assert read_report(shard_paths(slow_world)[0])[2]["interrupted"] is False  # the other one finished
    own = next(line.strip() for line in err.splitlines() if "--shard 1/2" in line)
    alone = slow_world.bulkconn(*shlex.split(own)[1:], "-q", subprocess=True, timeout=120)
    assert alone.returncode in (0, 1), alone.stderr
    merged = slow_world.bulkconn(
        "run", "job.jsonl", "--config", "bulkconn.toml", "--processes", "2", "--resume", "-q", subprocess=True
    )
    assert merged.returncode in (0, 1), merged.stderr
    assert "merged 2 shard report(s), 300 operation(s)" in merged.stderr
    plan = partition_of(slow_world.job, slow_world.config, 2)
    assert_done_once(slow_world.emu, slow_world.job, slow_world.dir / "job.report.jsonl", plan)


@pytest.fixture
def thousand_tenants(tmp_path: Path) -> Iterator[World]:
    """1,000 tenants with 2 connectors each; the sample job changes each once (2,000 operations, 40 of them syncs)."""
    with EmulatorThread(EmulatorOptions(tenants=1000, connectors_per_tenant=2, time_scale=0.05, seed=5)) as emu:
        yield World(emu, tmp_path, ops=2000)


def test_a_thousand_tenants_with_two_processes_are_each_done_once_by_one_shard(thousand_tenants: World) -> None:
    """`run --processes 2` over 1,000 tenants: the merged report and the emulator pass the single-process checks."""
    world = thousand_tenants
    proc = world.bulkconn(
        "run", "job.jsonl", "--config", "bulkconn.toml", "--processes", "2", "-q", subprocess=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr
    assert "merged 2 shard report(s), 2000 operation(s)" in proc.stderr
    plan = partition_of(world.job, world.config, 2)
    assert [len(names) for names in plan.tenants] == [500, 500]
    assert_done_once(world.emu, world.job, world.dir / "job.report.jsonl", plan)
    assert world.emu.stats()["writes_total"] == 2000  # nothing retried, nothing sent twice


def test_a_selector_for_every_tenant_is_listed_and_expanded_by_each_tenants_own_shard(world: World) -> None:
    """`"tenant": "*"` with --processes 2: each shard lists only its tenants; every match is done once, merged."""
    selector = {"key": "alias", "tenant": "*", "select": "all", "patch": {"exchangeAlias": "sharded"}}
    world.job.write_bytes(world.job.read_bytes() + orjson.dumps(selector) + b"\n")
    proc = world.bulkconn(
        "run", "job.jsonl", "--config", "bulkconn.toml", "--processes", "2", "-q", subprocess=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr
    _, results, _ = read_report(world.dir / "job.report.jsonl")
    state = world.emu.state()["tenants"]
    matches = {f"alias:{tenant}:{oid}" for tenant, entry in state.items() for oid in entry["exchangeConnectors"]}
    assert Counter(r["key"] for r in results) == Counter({str(n): 1 for n in range(1, 41)} | dict.fromkeys(matches, 1))
    for entry in state.values():
        assert all(c["exchangeAlias"] == "sharded" for c in entry["exchangeConnectors"].values())
    plan = partition_of(world.job, world.config, 2)
    for tenant, entry in world.emu.stats()["tenants"].items():
        writers = {m.groups() for agent in entry["user_agents"] if (m := SHARD_AGENT.search(agent))}
        assert writers == {(str(plan.shard_of(tenant)), "2")}
