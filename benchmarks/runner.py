"""Run the chosen scenarios one after another and write the results."""

from __future__ import annotations

import compileall
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.measure import HERE, ContenderFailed
from benchmarks.scale import scale
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Env
from benchmarks.server import cpus
from benchmarks.tables import write_readme

ALL = {**SCENARIOS, "scale": scale}


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
    }


def _merged(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s scenarios over ``previous``'s (``--only`` re-measures some scenarios and keeps the others)."""
    scenarios = {**previous.get("scenarios", {}), **new["scenarios"]}
    return {**new, "scenarios": {name: scenarios[name] for name in ALL if name in scenarios}}


def _compile_bytecode() -> None:
    """Write bulkconn's and the scripts' bytecode, as ``pip install`` of a wheel does for every contender's packages.

    Without it an environment with ``PYTHONDONTWRITEBYTECODE`` set (or a read-only checkout) compiles bulkconn's
    ~45 run-path modules from source in every measured process (about 50 ms of CPU each run) while aiohttp, msal
    and the SDK load the bytecode their installation wrote: the comparison would not be of the same thing.
    """
    for folder in (HERE.parent / "bulkconn", HERE / "scripts"):
        compileall.compile_dir(folder, quiet=1)


def main(*, quick: bool, only: list[str], output: str | None, work: str | None, readme: bool) -> int:
    """Run ``only`` (default: every scenario); 0 when every contender finished cleanly."""
    unknown = sorted(set(only) - set(ALL))
    if unknown:
        print(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    _compile_bytecode()
    server_cpu, client_cpu = cpus()
    scratch = Path(work) if work else HERE / "work"
    shutil.rmtree(scratch, ignore_errors=True)
    env = Env(scratch, server_cpu, client_cpu, QUICK if quick else FULL)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": _machine(),
        "pinning": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "scenarios": {},
    }
    for name in only or list(ALL):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            results["scenarios"][name] = ALL[name](env)
        except ContenderFailed as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        results["scenarios"][name]["elapsed_s"] = time.monotonic() - started
        results["scenarios"][name]["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        results["scenarios"][name]["load_average"] = os.getloadavg()
    target = Path(output) if output else HERE / "results" / ("quick.json" if quick else "latest.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    if only and target.exists():
        results = _merged(json.loads(target.read_text()), results)
    target.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {target}")
    if readme and not quick:
        write_readme(results, HERE / "README.md")
        print(f"updated {HERE / 'README.md'}")
    return 0
