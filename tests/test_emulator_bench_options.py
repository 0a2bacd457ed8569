"""Emulator options for benchmarks: slow token answers, no throttling, one app shared by every tenant."""

from __future__ import annotations

import asyncio
import base64
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from bulkconn.cli import cli
from bulkconn.cli.emulator import emulator_group
from bulkconn.emulator import EmulatorOptions
from bulkconn.emulator.artifacts import write_config
from bulkconn.emulator.state import generate_world
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant
from tests.emulator_helpers import list_statuses as _gets
from tests.emulator_helpers import post_batch

JSON = {"Content-Type": "application/json"}


async def test_token_latency_holds_answers_back_concurrently(make_emulator: EmulatorFactory) -> None:
    """20 token requests at once, each held 500 ms: all get a token, and the emulator held at least 10 at one time."""
    emu = await make_emulator(token_latency_ms=500)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as http:
        tokens = await asyncio.gather(*(get_token(http, emu, ("contoso", "fabrikam")[i % 2]) for i in range(20)))
    assert len(set(tokens)) == 20  # get_token asserts every answer is a 200
    stats = emu.stats()
    assert stats["max_concurrent_token_requests"] >= 10
    assert stats["token_requests"] == {"contoso": 10, "fabrikam": 10}


async def test_no_throttling_lifts_every_limit(make_emulator: EmulatorFactory) -> None:
    """Limits of 1 everywhere, throttling off: 5 requests, no 429, and nothing counted as throttled."""
    emu = await make_emulator(
        throttling=False, writes_per_app=1, any_per_app=1, any_per_tenant=1, global_per_app=1, time_scale=100
    )
    assert await _gets(emu, "contoso", 5) == [200] * 5
    assert emu.stats()["throttled_total"] == 0
    limited = await make_emulator(any_per_app=1, time_scale=100)
    assert await _gets(limited, "contoso", 2) == [200, 429]


def test_shared_app_is_one_registration_and_changes_nothing_else() -> None:
    """shared_app: the first tenant's bulkconn app in every tenant; tenant ids and other apps unchanged."""
    plain = generate_world(tenants=3, connectors_per_tenant=2, seed=7)
    shared = generate_world(tenants=3, connectors_per_tenant=2, seed=7, shared_app=True)
    writers = [t.writer_app() for t in shared.tenants.values()]
    assert len({(w.client_id, w.secrets[0]) for w in writers}) == 1
    assert writers[0].client_id == next(iter(plain.tenants.values())).writer_app().client_id
    assert list(shared.tenants) == list(plain.tenants)
    readers = [{a.client_id for a in t.apps.values() if a.display_name != "bulkconn"} for t in shared.tenants.values()]
    assert readers == [
        {a.client_id for a in t.apps.values() if a.display_name != "bulkconn"} for t in plain.tenants.values()
    ]
    assert [t.connectors for t in shared.tenants.values()] == [t.connectors for t in plain.tenants.values()]


async def test_shared_app_counts_the_global_window_across_tenants(
    make_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """With shared_app and a global limit of 4: 3 requests in contoso, then fabrikam's 2nd is a 429."""
    emu = await make_emulator(shared_app=True, global_per_app=4)
    assert await _gets(emu, "contoso", 3) == [200, 200, 200]
    assert await _gets(emu, "fabrikam", 2) == [200, 429]
    app_id = tenant(emu, "contoso").writer_app().client_id
    assert emu.stats()["global"]["apps"][app_id]["max_requests_in_window"] == 4
    config = tmp_path / "bulkconn.toml"
    write_config(emu.core, emu.ca_file, config)
    tenants = tomllib.loads(config.read_text())["tenants"]
    assert {t["client_id"] for t in tenants.values()} == {app_id}


def test_serve_options_reach_the_emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`emulator serve --no-throttling --shared-app --token-latency-ms 200` builds those options."""
    serve = emulator_group.commands["serve"]
    seen: list[EmulatorOptions] = []

    async def capture(options: EmulatorOptions, *rest: Any) -> None:
        seen.append(options)

    assert serve.callback is not None
    monkeypatch.setattr(sys.modules[serve.callback.__module__], "_serve", capture)
    args = ["emulator", "serve", "--no-throttling", "--shared-app", "--token-latency-ms", "200"]
    result = CliRunner().invoke(cli, [*args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (seen[0].throttling, seen[0].shared_app, seen[0].token_latency_ms) == (False, True, 200.0)
    refused = CliRunner().invoke(cli, ["emulator", "serve", "--token-latency-ms", "-1"])
    assert refused.exit_code == 2


# -- $batch sub-request bodies: a JSON object, or base64 (Graph's JSON batching format) -------------------


def _patch(cid: str, rid: str, body: Any) -> dict[str, Any]:
    url = f"/deviceManagement/exchangeConnectors/{cid}"
    return {"id": rid, "method": "PATCH", "url": url, "headers": JSON, "body": body}


async def test_batch_enum_only_body_as_object_and_as_base64(make_emulator: EmulatorFactory) -> None:
    """An enum-only PATCH succeeds in a batch as an object or base64; msgraph-core's empty "e30=" is a no-op."""
    emu = await make_emulator()
    ids = [c["id"] for c in tenant(emu, "contoso").connectors.values()]
    encoded = base64.b64encode(orjson.dumps({"exchangeConnectorType": "dedicated"})).decode()
    requests = [
        _patch(ids[0], "1", {"exchangeConnectorType": "hosted"}),
        _patch(ids[1], "2", encoded),
        _patch(ids[2], "3", base64.b64encode(b"{}").decode()),
    ]
    before = dict(tenant(emu, "contoso").connectors[ids[2].lower()])
    answers = {item["id"]: item for item in await post_batch(emu, requests)}
    assert {rid: a["status"] for rid, a in answers.items()} == {"1": 200, "2": 200, "3": 200}
    connectors = emu.state()["tenants"]["contoso"]["exchangeConnectors"]
    assert connectors[ids[0]]["exchangeConnectorType"] == "hosted"
    assert connectors[ids[1]]["exchangeConnectorType"] == "dedicated"
    assert connectors[ids[2]] == before


async def test_batch_body_string_that_is_not_base64_json_is_a_400(make_emulator: EmulatorFactory) -> None:
    """A string body that is not base64, or base64 of something other than JSON: that sub-request is a 400."""
    emu = await make_emulator()
    ids = [c["id"] for c in tenant(emu, "contoso").connectors.values()]
    requests = [
        _patch(ids[0], "1", "not base64 at all!"),
        _patch(ids[1], "2", base64.b64encode(b"<xml/>").decode()),
    ]
    answers = await post_batch(emu, requests)
    assert sorted(a["status"] for a in answers) == [400, 400]
    assert all("Invalid JSON" in a["body"]["error"]["message"] for a in answers)
