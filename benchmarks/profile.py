"""Profile bulkconn's client in the overhead scenario with py-spy: where its CPU goes, per function.

``python -m benchmarks profile [--batch-size N] [--ops N]`` (py-spy from the ``bench`` extra). Samples the
``bulkconn run`` process (pinned like the harness; only the thread holding the GIL, so samples are CPU) and prints the functions with the largest share of samples,
by own time and by time including callees. Collapsed stacks are kept in the work folder for a flame graph.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

from benchmarks import contenders as c
from benchmarks.alternation import patch_only
from benchmarks.measure import HERE, run_measured
from benchmarks.scenarios import FULL, NO_THROTTLING, UNTHROTTLED
from benchmarks.server import Server, ServerSpec, cpus, pinned

TOP = 25


def _frame(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func`` (lines merged)."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    marker = "site-packages/"
    root = f"{HERE.parent}/"
    short = path.split(marker, 1)[1] if marker in path else path.split(root)[-1].split("/lib/python3")[-1]
    return f"{short}:{name}"


def summarise(collapsed: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, own samples per function and inclusive samples per function from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        total += n
        if frames:
            own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return total, own, inclusive


def main(batch_size: int, ops: int, *, gil_only: bool = True) -> int:
    """Run one profiled ``bulkconn run`` over ``ops`` PATCHes on 50 tenants and print its hotspots.

    ``gil_only`` samples only the thread holding the GIL (Python CPU); without it every thread py-spy considers
    busy is sampled, which shows C work done with the GIL released (TLS in the token threads) but also some waiting.
    """
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    server_cpu, client_cpu = cpus()
    work = HERE / "work" / f"profile-{batch_size}"
    shutil.rmtree(work, ignore_errors=True)
    spec = ServerSpec(FULL.overhead_tenants, ops // FULL.overhead_tenants + 1, ops, UNTHROTTLED, extra=NO_THROTTLING)
    with Server(spec, work, server_cpu) as server:
        job = work / "job.jsonl"
        patch_only(server.sample_job, job, ops)
        contender = c.bulkconn(batch_size)
        collapsed = work / "bulkconn.collapsed.txt"
        command = contender.argv(job, server.config, work / "report.jsonl")
        spied = [
            spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "250",
            *(["--gil"] if gil_only else []),
            "--output",
            str(collapsed),
            "--",
            *command,
        ]
        run_measured(pinned(client_cpu, spied), log=work / "py-spy.log")
    total, own, inclusive = summarise(collapsed)
    print(f"bulkconn run, {ops} PATCHes, batch size {batch_size}: {total} samples (stacks in {collapsed})")
    ours = Counter({k: v for k, v in inclusive.items() if k.startswith("bulkconn/")})
    for title, counter in (
        ("own time", own),
        ("including callees", inclusive),
        ("bulkconn functions, with callees", ours),
    ):
        print(f"\ntop {TOP} by {title}:")
        for name, n in counter.most_common(TOP):
            print(f"  {100 * n / total:5.1f}%  {name}")
    return 0
