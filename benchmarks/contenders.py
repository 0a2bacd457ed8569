"""Who competes: every contender is a command line over the same job, configuration and emulator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import HERE, sdk_python

SCRIPTS = HERE / "scripts"
SINGLE_IN_FLIGHT = 64
BATCH_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Contender:
    """A name, the mode it runs in, and how to build its command line for a job."""

    name: str
    batch_size: int
    in_flight: int
    argv: Callable[[Path, Path, Path], list[str]]  # (job, config, report) -> argv


def _mode(batch_size: int) -> str:
    return "batch" if batch_size > 1 else "single"


def bulkconn(batch_size: int, *, concurrency: int | None = None) -> Contender:
    """``bulkconn run`` exactly as a user types it (quiet, so no terminal display is drawn)."""
    in_flight = concurrency or (SINGLE_IN_FLIGHT if batch_size == 1 else BATCH_IN_FLIGHT)

    def argv(job: Path, config: Path, report: Path) -> list[str]:
        return [
            sys.executable, "-m", "bulkconn", "run", str(job), "--config", str(config), "--report", str(report),
            "--batch-size", str(batch_size), "--concurrency", str(in_flight), "--quiet",
        ]  # fmt: skip

    return Contender(f"bulkconn-{_mode(batch_size)}", batch_size, in_flight, argv)


def _script(label: str, python: Callable[[], str], script: str, batch_size: int, concurrency: int | None) -> Contender:
    in_flight = concurrency or (SINGLE_IN_FLIGHT if batch_size == 1 else BATCH_IN_FLIGHT)

    def argv(job: Path, config: Path, report: Path) -> list[str]:
        return [
            python(), str(SCRIPTS / script), "--config", str(config), "--job", str(job),
            "--batch-size", str(batch_size), "--concurrency", str(in_flight),
        ]  # fmt: skip

    return Contender(f"{label}-{_mode(batch_size)}", batch_size, in_flight, argv)


def floor(batch_size: int, *, concurrency: int | None = None) -> Contender:
    """The smallest honest aiohttp script (``scripts/floor.py``) in bulkconn's interpreter."""
    return _script("floor", lambda: sys.executable, "floor.py", batch_size, concurrency)


def sdk(batch_size: int, *, concurrency: int | None = None) -> Contender:
    """msgraph-sdk (``scripts/sdk.py``) in its own cached virtual environment."""
    return _script("msgraph-sdk", lambda: str(sdk_python()), "sdk.py", batch_size, concurrency)
