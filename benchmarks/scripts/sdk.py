"""msgraph-sdk as its documentation shows, pointed at the emulator.

Per-object ``patch()`` under a semaphore, or ``BatchRequestContentCollection`` posted with the default middleware.
Workarounds it needs to talk to the emulator at all are marked WORKAROUND and listed in benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx
from azure.core.credentials import AccessToken
from common import Target, Tenant, arguments, chunks, load_job, load_target
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.device_management_exchange_connector import DeviceManagementExchangeConnector
from msgraph.generated.models.device_management_exchange_connector_type import DeviceManagementExchangeConnectorType
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_content_collection import BatchRequestContentCollection
from msgraph_core.requests.batch_request_item import BatchRequestItem


class EmulatorCredential:
    """An async TokenCredential: one client-credentials POST per tenant, cached (as azure-identity would)."""

    def __init__(self, target: Target, tenant: Tenant, http: httpx.AsyncClient) -> None:
        self._target, self._tenant, self._http = target, tenant, http
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        async with self._lock:
            if self._token is None:
                resp = await self._http.post(
                    self._target.token_url(self._tenant), data=self._target.token_form(self._tenant)
                )
                body = resp.json()
                self._token = AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))
        return self._token

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> EmulatorCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


def _client(target: Target, tenant: Tenant, http: httpx.AsyncClient) -> GraphServiceClient:
    host = httpx.URL(target.graph_url).host
    # WORKAROUND: the auth provider only attaches tokens for Microsoft's hosts unless told otherwise.
    auth = AzureIdentityAuthenticationProvider(
        EmulatorCredential(target, tenant, http), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=[host]
    )
    # WORKAROUND: trust the emulator's CA through our own httpx client; the default middleware still applies.
    client = GraphClientFactory.create_with_default_middleware(client=http)
    adapter = GraphRequestAdapter(auth, client)
    # WORKAROUND: the base URL is Graph's unless set on the adapter.
    adapter.base_url = f"{target.graph_url}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def _body(patch: dict[str, object]) -> DeviceManagementExchangeConnector:
    # The enum must be the model's enum: Kiota's serializer silently drops a plain str (an empty PATCH body).
    kind = patch.get("exchangeConnectorType")
    return DeviceManagementExchangeConnector(
        server_name=patch.get("serverName"),  # type: ignore[arg-type]
        primary_smtp_address=patch.get("primarySmtpAddress"),  # type: ignore[arg-type]
        exchange_connector_type=DeviceManagementExchangeConnectorType(kind) if kind is not None else None,
    )


async def main() -> int:
    args = arguments()
    target = load_target(args.config)
    job = load_job(args.job)
    gate = asyncio.Semaphore(args.concurrency)
    failed = 0
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(verify=target.ca_bundle, limits=limits, timeout=60) as http:
        clients = {alias: _client(target, tenant, http) for alias, tenant in target.tenants.items()}

        async def single(tenant: str, object_id: str, patch: dict[str, object]) -> None:
            connectors = clients[tenant].device_management.exchange_connectors
            async with gate:
                await connectors.by_device_management_exchange_connector_id(object_id).patch(_body(patch))

        async def batch(ops: list[tuple[str, str, dict[str, object]]]) -> None:
            nonlocal failed
            client = clients[ops[0][0]]
            collection = BatchRequestContentCollection()
            for _, object_id, patch in ops:
                builder = client.device_management.exchange_connectors.by_device_management_exchange_connector_id(
                    object_id
                )
                collection.add_batch_request_item(BatchRequestItem(builder.to_patch_request_information(_body(patch))))
            async with gate:
                answers = await client.batch.post(collection)
            # WORKAROUND: the collection's `responses_status_codes` (an async property) raises TypeError on every
            # answer in msgraph-core 1.5.2; ask each BatchResponseContent instead.
            statuses = {
                k: v for content in answers.get_responses() for k, v in content.get_response_status_codes().items()
            }
            failed += sum(status >= 300 for status in statuses.values()) + len(ops) - len(statuses)

        if args.batch_size == 1:
            await asyncio.gather(*(single(*op) for op in job))
        else:
            await asyncio.gather(*(batch(group) for group in chunks(job, args.batch_size)))
    print(f"msgraph-sdk: {len(job)} operations, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
