"""What fetching every tenant's token at once costs the client, by how many identity calls may run at once.

Run: ``python -m benchmarks tokens [--tenants N] [--rounds N] [--starts 8,128]``. The emulator runs in its own process
(pinned to the first CPU where there are two); this process, pinned to the second, builds bulkconn's
``MsalTokenProvider`` from the emulator's configuration and fetches every tenant's token at once (``asyncio.gather``,
as a run's first requests do), with the call gate starting at each given size (:mod:`bulkconn.callgate`; a start as
large as the thread pool is every call at once, the behaviour before the gate). Process CPU (all threads) per fetch
of every tenant's token, median over the rounds; every token request goes over loopback TLS to the emulator.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.measure import HERE
from benchmarks.server import Server, ServerSpec, cpus


async def _once(config_path: Path, start: int) -> float:
    from bulkconn.auth import TOKEN_THREADS, MsalTokenProvider
    from bulkconn.callgate import CallGate
    from bulkconn.config import load_config

    config = load_config(config_path)
    provider = MsalTokenProvider(config)
    provider._gate = CallGate(TOKEN_THREADS, start=start)  # the size under test
    began = time.process_time()
    await asyncio.gather(*(provider.token(alias) for alias in config.tenants))
    spent = time.process_time() - began
    await provider.aclose()
    return spent


def main(tenants: int, rounds: int, starts: list[int]) -> int:
    """Print the median CPU of fetching ``tenants`` tokens at once for each gate start, alternated over ``rounds``."""
    server_cpu, client_cpu = cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {int(client_cpu)})
    work = HERE / "work" / "tokens"
    shutil.rmtree(work, ignore_errors=True)
    spent: dict[int, list[float]] = {start: [] for start in starts}
    with Server(ServerSpec(tenants, 1, tenants, 1.0, extra=("--no-throttling",)), work, server_cpu) as server:
        for n in range(rounds + 1):
            for start in starts:
                cpu = asyncio.run(_once(server.config, start))
                if n:  # the first round warms the caches
                    spent[start].append(cpu)
    print(f"{tenants} tenants' tokens fetched at once, process CPU (median of {rounds} rounds):")
    for start, values in spent.items():
        print(f"  gate starting at {start:>3} calls at once: {statistics.median(values) * 1e3:6.1f} ms")
    return 0
