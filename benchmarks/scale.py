"""(4) Scale: job validation, dry-run and the resume scan at 1,000,000 lines, a run of a large slice, peak RSS.

Every step is a ``bulkconn`` command in its own process; the floor is a bare orjson read of the same file.
The resume scan reads a report that says every line already succeeded: the report of the real slice run,
its result lines repeated over the whole job (header fingerprint rewritten to the big job), so ``--resume``
must read all of it and then has nothing to send.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.alternation import patch_only
from benchmarks.contenders import SCRIPTS
from benchmarks.measure import Sample, run_measured
from benchmarks.scenarios import NO_THROTTLING, UNTHROTTLED, Env
from benchmarks.server import Server, ServerSpec, pinned

BULKCONN = [sys.executable, "-m", "bulkconn"]


def _head(source: Path, target: Path, lines: int) -> None:
    with source.open("rb") as src, target.open("wb") as out:
        for n, raw in enumerate(src):
            if n >= lines:
                break
            out.write(raw)


def _full_report(slice_report: Path, job: Path, target: Path) -> int:
    """A report in which every line of ``job`` succeeded, built from the slice run's real lines."""
    header: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    with slice_report.open("rb") as handle:
        for raw in handle:
            line = json.loads(raw)
            if line["type"] == "header" and header is None:
                header = line
            elif line["type"] == "result":
                results.append(line)
    assert header is not None and results, f"{slice_report} holds no header or no results"
    digest, size, lines_in_job = hashlib.sha256(), 0, 0
    with job.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            lines_in_job += block.count(b"\n")
    header.update(job=str(job), job_sha256=digest.hexdigest(), job_bytes=size, job_lines=lines_in_job)
    with target.open("w") as out, job.open("rb") as lines:
        out.write(json.dumps(header) + "\n")
        for n, raw in enumerate(lines, start=1):
            op = json.loads(raw)
            result = dict(results[(n - 1) % len(results)], key=str(n), line=n, tenant=op["tenant"], id=op["id"])
            out.write(json.dumps(result) + "\n")
    return int(header["job_lines"])


def _step(env: Env, work: Path, name: str, argv: list[str]) -> dict[str, Any]:
    sample: Sample = run_measured(pinned(env.client_cpu, argv), log=work / f"{name}.log")
    print(f"    {name:<28} cpu {sample.cpu_s:7.2f} s  wall {sample.wall_s:7.2f} s  rss {sample.peak_rss_mib:6.0f} MiB")
    return sample.as_json()


def scale(env: Env) -> dict[str, Any]:
    """Validation, dry-run, resume scan and a slice run; one run each (these are minutes at full size)."""
    s = env.sizes
    work = env.work / "scale"
    spec = ServerSpec(50, s.scale_slice // 50 + 1, s.scale_lines, UNTHROTTLED, extra=NO_THROTTLING)
    steps: dict[str, Any] = {}
    with Server(spec, work, env.server_cpu) as server:
        big, small, part = work / "job-big.jsonl", work / "job-small.jsonl", work / "job-slice.jsonl"
        patch_only(server.sample_job, big)
        _head(big, small, s.scale_small)
        _head(big, part, s.scale_slice)
        config = ["--config", str(server.config)]
        steps["floor_read_big"] = _step(
            env, work, "floor_read_big", [sys.executable, str(SCRIPTS / "read_floor.py"), str(big)]
        )
        for label, job in (("small", small), ("big", big)):
            steps[f"validate_{label}"] = _step(
                env, work, f"validate_{label}", [*BULKCONN, "validate", str(job), *config]
            )
            dry = [
                *BULKCONN,
                "run",
                str(job),
                *config,
                "--dry-run",
                "--quiet",
                "--report",
                str(work / f"dry-{label}.jsonl"),
            ]
            steps[f"dry_run_{label}"] = _step(env, work, f"dry_run_{label}", dry)
        slice_report = work / "slice.report.jsonl"
        run = [*BULKCONN, "run", str(part), *config, "--quiet", "--report", str(slice_report), "--concurrency", "8"]
        steps["run_slice"] = _step(env, work, "run_slice", run)
        full = work / "big.report.jsonl"
        _full_report(slice_report, big, full)
        floor_report = [sys.executable, str(SCRIPTS / "read_floor.py"), str(full)]
        steps["floor_read_report"] = _step(env, work, "floor_read_report", floor_report)
        resume = [*BULKCONN, "run", str(big), *config, "--quiet", "--resume", "--report", str(full)]
        steps["resume_scan_big"] = _step(env, work, "resume_scan_big", resume)
    setup: dict[str, Any] = {"lines": s.scale_lines, "small": s.scale_small, "slice": s.scale_slice, "tenants": 50}
    setup["job_mib"] = big.stat().st_size / 2**20
    setup["report_mib"] = full.stat().st_size / 2**20
    return {"setup": setup, "steps": steps}
