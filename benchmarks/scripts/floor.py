"""The floor: the smallest honest script that sends the job's PATCHes.

One aiohttp session, one semaphore, ``json=`` bodies, a token per tenant fetched once by a client-credentials
POST, the emulator's CA trusted. No validation, no report, no retries: a failed answer is only counted.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import aiohttp
from common import Target, arguments, chunks, load_job, load_target


async def _tokens(http: aiohttp.ClientSession, target: Target) -> dict[str, str]:
    async def one(alias: str) -> tuple[str, str]:
        tenant = target.tenants[alias]
        async with http.post(target.token_url(tenant), data=target.token_form(tenant)) as resp:
            return alias, (await resp.json())["access_token"]

    return dict(await asyncio.gather(*(one(alias) for alias in target.tenants)))


async def main() -> int:
    args = arguments()
    target = load_target(args.config)
    job = load_job(args.job)
    context = ssl.create_default_context(cafile=target.ca_bundle)
    gate = asyncio.Semaphore(args.concurrency)
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0)) as http:
        tokens = await _tokens(http, target)

        async def single(tenant: str, object_id: str, patch: dict[str, object]) -> None:
            nonlocal failed
            url = f"{target.graph_url}/v1.0/deviceManagement/exchangeConnectors/{object_id}"
            async with gate, http.patch(url, json=patch, headers={"Authorization": f"Bearer {tokens[tenant]}"}) as r:
                await r.read()
                failed += r.status >= 300

        async def batch(ops: list[tuple[str, str, dict[str, object]]]) -> None:
            nonlocal failed
            requests = [
                {
                    "id": str(n),
                    "method": "PATCH",
                    "url": f"/deviceManagement/exchangeConnectors/{object_id}",
                    "headers": {"Content-Type": "application/json"},
                    "body": patch,
                }
                for n, (_, object_id, patch) in enumerate(ops)
            ]
            headers = {"Authorization": f"Bearer {tokens[ops[0][0]]}"}
            async with (
                gate,
                http.post(f"{target.graph_url}/v1.0/$batch", json={"requests": requests}, headers=headers) as r,
            ):
                answers = (await r.json())["responses"]
                failed += sum(a["status"] >= 300 for a in answers) + len(ops) - len(answers)

        if args.batch_size == 1:
            await asyncio.gather(*(single(*op) for op in job))
        else:
            await asyncio.gather(*(batch(group) for group in chunks(job, args.batch_size)))
    print(f"floor: {len(job)} operations, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
