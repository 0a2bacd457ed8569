"""bulkconn's own overhead, side by side with a raw-aiohttp floor, against the emulator with limits lifted.

Run: python benchmarks/engine_overhead.py [OPS]. Throttling is switched off on both sides (the emulator's
windows and bulkconn's pacing raised far above what the run can reach), so what is left is the cost of
the client itself: bulkconn batched (20 per $batch), bulkconn with single requests, and a bare aiohttp loop
sending the same PATCHes with the same concurrency (16) and a pre-fetched token. Reported as ratios.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

from bulkconn.config import load_config
from bulkconn.emulator import Emulator, EmulatorOptions
from bulkconn.emulator.artifacts import write_config, write_job
from bulkconn.engine import EngineSettings
from bulkconn.runner import RunOptions, execute

LIFTED = 10_000_000


async def _raw_floor(emu: Emulator, lines: list[dict[str, object]], concurrency: int) -> float:
    """PATCH every line of the job with plain aiohttp (one token per tenant fetched up front)."""
    context = ssl.create_default_context(cafile=str(emu.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        tokens = {}
        for tenant in emu.core.world.tenants.values():
            app = tenant.writer_app()
            form = {
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": app.secrets[0],
                "scope": "https://graph.microsoft.com/.default",
            }
            async with http.post(f"{emu.base_url}/{tenant.tenant_id}/oauth2/v2.0/token", data=form) as resp:
                tokens[tenant.alias] = (await resp.json())["access_token"]
        queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        for line in lines:
            queue.put_nowait(line)

        async def worker() -> None:
            while not queue.empty():
                line = queue.get_nowait()
                if "patch" not in line:
                    continue
                url = f"{emu.base_url}/v1.0/deviceManagement/exchangeConnectors/{line['id']}"
                headers = {
                    "Authorization": f"Bearer {tokens[str(line['tenant'])]}",
                    "client-request-id": str(uuid.uuid4()),
                }
                async with http.patch(url, json=line["patch"], headers=headers) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _bulkconn(emu: Emulator, job: Path, directory: Path, batch_size: int) -> float:
    config = load_config(directory / "bulkconn.toml")
    report = directory / f"report-{batch_size}.jsonl"
    options = RunOptions(report=report, settings=EngineSettings(batch_size=batch_size, concurrency=16, seed=1))
    started = time.perf_counter()
    result = await execute(job, config, options, install_signals=False)
    elapsed = time.perf_counter() - started
    assert result.counts["succeeded"] > 0 and not result.counts["failed"], result.counts
    return elapsed


async def main(ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        options = EmulatorOptions(
            tenants=5,
            connectors_per_tenant=ops // 5,
            writes_per_app=LIFTED,
            writes_per_tenant=LIFTED,
            any_per_app=LIFTED,
            any_per_tenant=LIFTED,
        )
        async with Emulator(options) as emu:
            write_config(
                emu.core,
                emu.ca_file,
                directory / "bulkconn.toml",
                overrides={
                    t.alias: {"writes_per_20s": LIFTED, "concurrency": 16} for t in emu.core.world.tenants.values()
                },
            )
            job = directory / "job.jsonl"
            write_job(emu.core, job, ops)
            lines = [orjson.loads(x) for x in job.read_bytes().splitlines()]
            floor = await _raw_floor(emu, lines, 16)
            batched = await _bulkconn(emu, job, directory, 20)
            single = await _bulkconn(emu, job, directory, 1)
    print(f"{ops} PATCHes over 5 tenants, emulator limits lifted, 16 in flight (same machine, same emulator):")
    print(f"  raw aiohttp floor (single requests): {floor:6.2f} s  ({ops / floor:7.0f} ops/s)  1.00x")
    print(f"  bulkconn --batch-size 1:             {single:6.2f} s  ({ops / single:7.0f} ops/s)  {single / floor:.2f}x")
    print(
        f"  bulkconn --batch-size 20:            {batched:6.2f} s  ({ops / batched:7.0f} ops/s)  {batched / floor:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
