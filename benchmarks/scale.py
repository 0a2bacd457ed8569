"""Scale check for the streaming paths: a million-line job scan and a million-line report scan.

Run: python benchmarks/scale.py [LINES]. Each measurement runs in a fresh process; it prints wall
time and the growth of that process's peak RSS, next to the time of a bare line-by-line orjson read
of the same file (the floor), as a ratio. Numbers, not assertions: the tests never time anything.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from bulkconn.job import scan_job
from bulkconn.report.reader import read_state


def _phase(name: str, path: str, tenants: list[str], out: multiprocessing.Queue[tuple[float, float]]) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if name == "job scan":
        scan_job(Path(path), tenants, on_invalid=lambda i: None)
    else:
        read_state(Path(path))
    elapsed = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out.put((elapsed, grown_mib))


def _measure(name: str, path: Path, tenants: list[str]) -> tuple[float, float]:
    queue: multiprocessing.Queue[tuple[float, float]] = multiprocessing.Queue()
    proc = multiprocessing.get_context("fork").Process(target=_phase, args=(name, str(path), tenants, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _floor(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as handle:
        for line in handle:
            orjson.loads(line)
    return time.perf_counter() - started


def main(lines: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        job, report = Path(tmp) / "job.jsonl", Path(tmp) / "report.jsonl"
        with job.open("wb") as out:
            for n in range(lines):
                out.write(
                    orjson.dumps(
                        {
                            "tenant": f"t{n % 50}",
                            "id": str(uuid.UUID(int=n)),
                            "patch": {"serverName": f"mail{n}.example.com"},
                        }
                    )
                    + b"\n"
                )
        with report.open("wb") as out:
            out.write(orjson.dumps({"type": "header", "job_sha256": "x"}) + b"\n")
            for n in range(1, lines + 1):
                out.write(
                    orjson.dumps(
                        {
                            "type": "result",
                            "key": str(n),
                            "line": n,
                            "tenant": f"t{n % 50}",
                            "id": str(uuid.UUID(int=n)),
                            "action": "update",
                            "status": "succeeded",
                            "http_status": 200,
                            "attempts": 1,
                            "throttled": 0,
                            "error": None,
                            "request_id": str(uuid.uuid4()),
                            "client_request_id": str(uuid.uuid4()),
                            "duration_ms": 12,
                            "finished_at": "2026-11-28T00:00:00.000Z",
                        }
                    )
                    + b"\n"
                )
        tenants = [f"t{i}" for i in range(50)]
        for name, path in (("job scan", job), ("report scan", report)):
            floor = _floor(path)
            elapsed, grown = _measure(name, path, tenants)
            size = path.stat().st_size / 2**20
            print(
                f"{name}: {lines:,} lines ({size:.0f} MiB) in {elapsed:.2f} s "
                f"({elapsed / floor:.2f}x a bare orjson read of {floor:.2f} s); peak RSS grew {grown:.0f} MiB"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
