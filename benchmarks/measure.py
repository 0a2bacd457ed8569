"""Run one contender as a child process and read what it cost from the OS accounting.

Client CPU is user+sys from ``getrusage(RUSAGE_CHILDREN)`` before and after (the process and every descendant it
waited for). The emulator is a child too, but it is still running, so none of its CPU is counted here.

Peak RSS: Linux carries a process's ``ru_maxrss`` across ``exec``, so a child forked from this (large) harness would
report at least the harness's own RSS. GNU time (``/usr/bin/time``, a few hundred KiB) is put in between where it
exists and reports the command's own peak; without it the figure is ``os.wait4``'s and can be an overestimate.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
REQUIREMENTS = HERE / "requirements.txt"
GNU_TIME = Path("/usr/bin/time")


class ContenderFailed(RuntimeError):
    """A contender exited non-zero: its figures would describe different work."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one contender."""

    cpu_s: float
    wall_s: float
    peak_rss_mib: float
    stats: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_measured(argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> Sample:
    """Run ``argv`` to completion; its CPU, wall time and peak RSS (stats are filled in by the caller)."""
    rss_file = log.with_suffix(".maxrss")
    if GNU_TIME.exists():
        argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *argv]
    before = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - before
    if process.returncode != 0:
        raise ContenderFailed(f"{argv[0]} ... exited {process.returncode}; see {log}")
    peak_kib = int(rss_file.read_text().split()[-1]) if GNU_TIME.exists() else usage.ru_maxrss
    return Sample(cpu_s=cpu, wall_s=wall, peak_rss_mib=peak_kib / 1024, stats={})


def sdk_python() -> Path:
    """The msgraph-sdk virtual environment's interpreter, created from requirements.txt on first use."""
    venv = VENVS / "msgraph"
    marker = venv / "requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = venv / "bin" / "python"
    if not (marker.exists() and marker.read_text() == digest and python.exists()):
        print(f"installing the msgraph-sdk contender into {venv} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
        marker.write_text(digest)
    return python
