"""The emulator in its own process, driven through its CLI, and its admin statistics."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 120.0


def cpus() -> tuple[str | None, str | None]:
    """taskset CPU lists for (server, client): their own CPU each where there are two, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return str(available[0]), str(available[1])


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    """Prefix ``argv`` with taskset when a CPU is given (taskset execs, so the pid and rusage stay the command's)."""
    return ["taskset", "-c", cpu, *argv] if cpu else argv


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start the emulator for one scenario (every field maps to a ``bulkconn emulator serve`` flag)."""

    tenants: int
    connectors_per_tenant: int
    ops: int
    time_scale: float = 1.0
    patch_status: int = 200
    extra: tuple[str, ...] = ()

    def argv(self, work: Path) -> list[str]:
        return [
            sys.executable, "-m", "bulkconn", "emulator", "serve",
            "--tenants", str(self.tenants),
            "--connectors-per-tenant", str(self.connectors_per_tenant),
            "--time-scale", repr(self.time_scale),
            "--patch-status", str(self.patch_status),
            "--state-dir", str(work / "state"),
            "--ready-file", str(work / "ready.txt"),
            "--write-config", str(work / "bulkconn.toml"),
            "--write-job", str(work / "sample.jsonl"),
            "--ops", str(self.ops),
            *self.extra,
        ]  # fmt: skip


@dataclass(slots=True)
class Server:
    """A running ``bulkconn emulator serve``: its config, job, base URL and admin statistics."""

    spec: ServerSpec
    work: Path
    cpu: str | None
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def config(self) -> Path:
        return self.work / "bulkconn.toml"

    @property
    def sample_job(self) -> Path:
        return self.work / "sample.jsonl"

    def __enter__(self) -> Server:
        self.work.mkdir(parents=True, exist_ok=True)
        log = (self.work / "emulator.log").open("wb")
        self.process = subprocess.Popen(pinned(self.cpu, self.spec.argv(self.work)), stdout=log, stderr=log)
        ready = self.work / "ready.txt"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (ready.exists() and ready.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start; see {self.work / 'emulator.log'}")
            time.sleep(0.05)
        self.base_url = ready.read_text().strip().splitlines()[0]
        ca = tomllib.loads(self.config.read_text())["defaults"]["ca_bundle"]
        self._context = ssl.create_default_context(cafile=ca)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _admin(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{path}", method=method, data=b"{}" if method == "POST" else None
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, context=self._context, timeout=60) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        return dict(self._admin("GET", "stats"))

    def state(self) -> dict[str, Any]:
        """``GET /_emulator/state``: every tenant's objects."""
        return dict(self._admin("GET", "state"))

    def reset(self) -> None:
        """``POST /_emulator/reset``: objects, windows and counters back to the start."""
        self._admin("POST", "reset")
