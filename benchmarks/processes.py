"""``python -m benchmarks.processes``: one many-tenant job run with ``--processes 1`` and ``--processes N``.

The figures behind the ``--processes`` row of ``docs/scale-out.md``. The emulator runs as in the harness
(``bulkconn emulator serve`` in its own process, pinned to the first CPU, reset before every run,
``--no-throttling``); the client is ``bulkconn run JOB --processes P --batch-size 20 --concurrency 64 --quiet``,
not pinned, so that its children may use every CPU the machine has left. The runs alternate (1, N, 1, N, ...)
and the medians are printed as a Markdown table. Every run must write every operation exactly once.

Client CPU is the parent's and its children's user + system time (``RUSAGE_CHILDREN``), wall time the whole
command, start-up and merge included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from benchmarks.alternation import patch_only
from benchmarks.measure import HERE, Sample, run_measured
from benchmarks.server import Server, ServerSpec, cpus


def _argv(job: Path, config: Path, report: Path, processes: int) -> list[str]:
    return [
        sys.executable, "-m", "bulkconn", "run", str(job), "--config", str(config), "--report", str(report),
        "--processes", str(processes), "--batch-size", "20", "--concurrency", "64", "--quiet",
    ]  # fmt: skip


def _once(server: Server, job: Path, work: Path, processes: int, ops: int) -> Sample:
    server.reset()
    for old in work.glob(f"p{processes}.*report.jsonl"):
        old.unlink()
    sample = run_measured(
        _argv(job, server.config, work / f"p{processes}.report.jsonl", processes), log=work / "run.log"
    )
    writes = server.stats()["writes_total"]
    if writes != ops:
        raise SystemExit(f"--processes {processes} wrote {writes} times for {ops} operations; see {work / 'run.log'}")
    return sample


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--ops-per-tenant", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="N, run against --processes 1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ops = args.tenants * args.ops_per_tenant
    work = HERE / "work" / "processes"
    shutil.rmtree(work, ignore_errors=True)  # a ready file left by an earlier run would name a dead server
    server_cpu, _ = cpus()
    spec = ServerSpec(args.tenants, args.ops_per_tenant, ops, 1.0, extra=("--no-throttling",))
    samples: dict[int, list[Sample]] = {1: [], args.processes: []}
    with Server(spec, work, server_cpu) as server:
        job = work / "job.jsonl"
        patch_only(server.sample_job, job, ops)
        for round_number in range(args.rounds + 1):  # round 0 warms the file cache and the emulator
            for processes in samples:
                sample = _once(server, job, work, processes, ops)
                print(f"round {round_number}: --processes {processes}: {sample.wall_s:.2f} s wall", file=sys.stderr)
                if round_number:
                    samples[processes].append(sample)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.tenants} tenants x {args.ops_per_tenant} PATCHes ($batch of 20, 64 in flight per process), "
          f"medians of {args.rounds} runs on {len(os.sched_getaffinity(0))} CPUs (load average now {load}); "
          f"emulator pinned to CPU {server_cpu}, client unpinned\n")  # fmt: skip
    print("| processes | wall s | client CPU s | operations / s (wall) | operations / CPU s |")
    print("|---|---|---|---|---|")
    for processes, runs in samples.items():
        wall = statistics.median(s.wall_s for s in runs)
        cpu = statistics.median(s.cpu_s for s in runs)
        print(f"| {processes} | {wall:.2f} | {cpu:.2f} | {ops / wall:,.0f} | {ops / cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
