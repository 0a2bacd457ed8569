"""Every /deviceManagement collection served by the emulator over a real HTTPS socket: seeded objects, paging,
$select, PATCH validated against each object's own type, bound actions and their effects, $batch across
collections, and one throttling window shared by all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from bulkconn import registry
from bulkconn.cli.emulator import emulator_group
from bulkconn.emulator import Emulator, EmulatorOptions
from bulkconn.emulator.artifacts import write_job
from bulkconn.emulator.core import EmulatorCore
from bulkconn.emulator.seeding import SEEDED
from bulkconn.emulator.state import generate_world
from tests.conftest import EmulatorFactory, get_token, ssl_context, tenant
from tests.emulator_helpers import post_batch

COLLECTIONS = ("exchangeConnectors", *SEEDED)
W10 = "#microsoft.graph.windows10GeneralConfiguration"
IOS = "#microsoft.graph.iosGeneralDeviceConfiguration"


class Client:
    """A tenant's app on one emulator: JSON requests with a bearer token, answers as (status, body)."""

    def __init__(self, emu: Emulator, http: aiohttp.ClientSession, token: str) -> None:
        self.emu, self.http, self.auth = emu, http, {"Authorization": f"Bearer {token}"}

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.emu.base_url}/v1.0/deviceManagement/{path}"

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.auth}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url(path), **kwargs) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None


@pytest.fixture
async def client(emu: Emulator, http: aiohttp.ClientSession) -> Client:
    return Client(emu, http, await get_token(http, emu))


async def _client_for(emu: Emulator, http: aiohttp.ClientSession, alias: str = "contoso") -> Client:
    return Client(emu, http, await get_token(http, emu, alias))


def first(emu: Emulator, collection: str, odata_type: str | None = None, alias: str = "contoso") -> dict[str, Any]:
    objects = tenant(emu, alias).store(collection).values()
    return next(o for o in objects if odata_type in (None, o["@odata.type"]))


def test_seeded_objects_are_valid_deterministic_and_leave_connectors_unchanged() -> None:
    """Each seeded object is a valid instance of a concrete type of its collection; same seed, same objects;
    adding them changes no tenant, app or connector."""
    sizes = dict.fromkeys(SEEDED, 6)
    world = generate_world(tenants=2, connectors_per_tenant=3, seed=7, sizes=sizes)
    assert world.to_json() == generate_world(tenants=2, connectors_per_tenant=3, seed=7, sizes=sizes).to_json()
    bare = generate_world(tenants=2, connectors_per_tenant=3, seed=7).to_json()
    assert [{k: t[k] for k in bare["tenants"][0]} for t in world.to_json()["tenants"]] == bare["tenants"]
    for t in world.tenants.values():
        for name in SEEDED:
            resource = registry.resource(name)
            assert len(t.store(name)) == 6
            for obj in t.store(name).values():
                kind = obj["@odata.type"].removeprefix("#microsoft.graph.")
                assert kind in resource.entity_type.concrete, (name, kind)
                stype = registry.structured_type(kind)
                assert stype is not None
                for prop, value in obj.items():
                    if prop != "@odata.type":
                        assert registry.check_value(stype.properties[prop].type, value, prop) == [], (name, prop)
    kinds = {o["@odata.type"] for o in world.tenants[next(iter(world.tenants))].store("deviceConfigurations").values()}
    assert {W10, IOS} <= kinds


@pytest.mark.parametrize("collection", COLLECTIONS)
async def test_list_pages_with_select_across_pages(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, collection: str
) -> None:
    """Every seeded collection pages by the page size; nextLink keeps $select; every object is seen once."""
    emu = await make_emulator(connectors_per_tenant=7, objects_per_collection=7, page_size=3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as session:
        api = await _client_for(emu, session)
        url: str | None = f"{collection}?$select=displayName"
        seen: list[str] = []
        pages = 0
        while url:
            status, body = await api.send("GET", url)
            assert status == 200
            assert body["@odata.context"].endswith(f"$metadata#deviceManagement/{collection}")
            assert all(set(o) <= {"id", "@odata.type", "displayName"} for o in body["value"])
            seen += [o["id"] for o in body["value"]]
            url = body.get("@odata.nextLink")
            pages += 1
    assert pages == 3
    assert seen == [o["id"] for o in tenant(emu, "contoso").store(collection).values()]


async def test_get_top_and_unknown_id(emu: Emulator, client: Client) -> None:
    """GET an object returns it whole; $top caps a page; an unknown id is 404 naming the type."""
    device = first(emu, "managedDevices")
    assert await client.send("GET", f"managedDevices/{device['id'].upper()}") == (200, device)
    status, body = await client.send("GET", "deviceCategories?$top=2")
    assert status == 200 and len(body["value"]) == 2 and "$top=2" in body["@odata.nextLink"]
    status, body = await client.send("GET", "windowsAutopilotDeviceIdentities/nope")
    assert status == 404 and "WindowsAutopilotDeviceIdentity with id 'nope'" in body["error"]["message"]


async def test_patch_category_valid_and_invalid(emu: Emulator, client: Client) -> None:
    """A valid PATCH answers 200 with the object and is stored; a misspelt property is 400, named, with a
    suggestion, and changes nothing."""
    category = first(emu, "deviceCategories")
    path = f"deviceCategories/{category['id']}"
    status, body = await client.send("PATCH", path, {"displayName": "Kiosks EU", "description": None})
    assert status == 200 and body == category and body["displayName"] == "Kiosks EU" and body["description"] is None
    before = dict(category)
    status, body = await client.send("PATCH", path, {"displayNme": "x"})
    assert status == 400 and body["error"]["code"] == "BadRequest"
    assert "'displayNme'" in body["error"]["message"] and "did you mean 'displayName'?" in body["error"]["message"]
    assert category == before
    stats = emu.stats()["tenants"]["contoso"]
    assert stats["patches"][category["id"]] == 1
    assert stats["collections"]["deviceCategories"] | {"actions": {}} == {
        "writes": 2,
        "patches": 1,
        "creates": 0,
        "deletes": 0,
        "actions": {},
    }


async def test_abstract_collection_patch_is_validated_against_the_stored_type(emu: Emulator, client: Client) -> None:
    """A configuration is checked against its own concrete type: a Windows setting is fine on a Windows policy,
    refused on an iOS one, and a different @odata.type is refused; a change bumps version and the timestamp."""
    windows, ios = first(emu, "deviceConfigurations", W10), first(emu, "deviceConfigurations", IOS)
    version, modified = windows["version"], windows["lastModifiedDateTime"]
    status, body = await client.send("PATCH", f"deviceConfigurations/{windows['id']}", {"defenderScanType": "full"})
    assert status == 200 and body["defenderScanType"] == "full" and body["@odata.type"] == W10
    assert body["version"] == version + 1 and body["lastModifiedDateTime"] != modified
    status, body = await client.send("PATCH", f"deviceConfigurations/{ios['id']}", {"defenderScanType": "full"})
    assert status == 400 and "'defenderScanType' is not a property of 'iosGeneralDeviceConfiguration'" in str(body)
    status, body = await client.send("PATCH", f"deviceConfigurations/{ios['id']}", {"@odata.type": W10})
    assert status == 400 and "@odata.type" in body["error"]["message"]
    status, body = await client.send("PATCH", f"deviceCompliancePolicies/{ios['id']}", {"version": 9})
    assert status == 404
    policy = first(emu, "deviceCompliancePolicies")
    status, body = await client.send("PATCH", f"deviceCompliancePolicies/{policy['id']}", {"version": 9})
    assert status == 400 and "'version' cannot be set" in body["error"]["message"]


async def test_autopilot_has_no_patch_and_update_device_properties_changes_the_device(
    emu: Emulator, client: Client
) -> None:
    """PATCH on an Autopilot device is 405 naming the action to use; updateDeviceProperties sets the group tag
    (204), a misspelt parameter is 400 with a suggestion, and each call is recorded."""
    device = first(emu, "windowsAutopilotDeviceIdentities")
    path = f"windowsAutopilotDeviceIdentities/{device['id']}"
    status, body = await client.send("PATCH", path, {"groupTag": "Sales"})
    assert status == 405 and "updateDeviceProperties" in body["error"]["message"]
    params = {"groupTag": "Sales-EU", "displayName": "LAPTOP-0042"}
    assert await client.send("POST", f"{path}/updateDeviceProperties", params) == (204, None)
    assert (await client.send("GET", path))[1] == device | params
    status, body = await client.send("POST", f"{path}/microsoft.graph.updateDeviceProperties", {"grouptag": "x"})
    assert status == 400 and "did you mean 'groupTag'?" in body["error"]["message"]
    assert await client.send("POST", f"{path}/unassignUserFromDevice") == (204, None)
    actions = emu.stats()["tenants"]["contoso"]["collections"]["windowsAutopilotDeviceIdentities"]["actions"]
    assert actions == {"updateDeviceProperties": {device["id"]: 1}, "unassignUserFromDevice": {device["id"]: 1}}


async def test_managed_device_actions_are_recorded_and_queued(emu: Emulator, client: Client) -> None:
    """syncDevice and rebootNow (no body) answer 204, are counted per device and show as pending actions;
    a missing required parameter and an unknown action are 400s that say what exists."""
    device = first(emu, "managedDevices")
    path = f"managedDevices/{device['id']}"
    assert await client.send("POST", f"{path}/syncDevice") == (204, None)
    assert await client.send("POST", f"{path}/microsoft.graph.rebootNow", {}) == (204, None)
    assert await client.send("POST", f"{path}/retire") == (204, None)
    status, body = await client.send("POST", f"{path}/windowsDefenderScan", {})
    assert status == 400 and "'quickScan' is required" in body["error"]["message"]
    status, body = await client.send("POST", f"{path}/syncDevices")
    assert status == 400 and "did you mean 'syncDevice'?" in body["error"]["message"]
    results = device["deviceActionResults"]
    assert [(r["actionName"], r["actionState"]) for r in results] == [
        ("syncDevice", "pending"),
        ("rebootNow", "pending"),
        ("retire", "pending"),
    ]
    assert device["managementState"] == "retirePending"
    actions = emu.stats()["tenants"]["contoso"]["collections"]["managedDevices"]["actions"]
    assert actions == {name: {device["id"]: 1} for name in ("rebootNow", "retire", "syncDevice")}


async def test_assign_answers_with_the_assignments(emu: Emulator, client: Client) -> None:
    """An action that returns a collection (assign) answers 200 with it, each assignment with an id."""
    policy = first(emu, "deviceCompliancePolicies")
    target = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
    status, body = await client.send(
        "POST", f"deviceCompliancePolicies/{policy['id']}/assign", {"assignments": [{"target": target}]}
    )
    assert status == 200 and [a["target"] for a in body["value"]] == [target] and body["value"][0]["id"]


async def test_batch_over_mixed_collections(emu: Emulator) -> None:
    """One $batch patches a category and a connector, calls an Autopilot and a device action and reads a
    policy; each sub-request is routed as if sent alone, and a bad one fails alone."""
    category, connector = first(emu, "deviceCategories"), first(emu, "exchangeConnectors")
    autopilot, device = first(emu, "windowsAutopilotDeviceIdentities"), first(emu, "managedDevices")
    policy = first(emu, "deviceConfigurations", IOS)
    json_headers = {"Content-Type": "application/json"}
    dm = "/deviceManagement"
    requests: list[dict[str, Any]] = [
        {"id": "1", "method": "PATCH", "url": f"{dm}/deviceCategories/{category['id']}", "headers": json_headers}
        | {"body": {"description": "Batch"}},
        {"id": "2", "method": "PATCH", "url": f"{dm}/exchangeConnectors/{connector['id']}", "headers": json_headers}
        | {"body": {"serverName": "mail.batch"}},
        {"id": "3", "method": "POST", "url": f"{dm}/windowsAutopilotDeviceIdentities/{autopilot['id']}"}
        | {"url": f"{dm}/windowsAutopilotDeviceIdentities/{autopilot['id']}/updateDeviceProperties"}
        | {"headers": json_headers, "body": {"groupTag": "Batch"}},
        {"id": "4", "method": "POST", "url": f"{dm}/managedDevices/{device['id']}/syncDevice"},
        {"id": "5", "method": "GET", "url": f"{dm}/deviceConfigurations/{policy['id']}?$select=displayName"},
        {"id": "6", "method": "PATCH", "url": f"{dm}/deviceConfigurations/{policy['id']}", "headers": json_headers}
        | {"body": {"defenderScanType": "full"}},
    ]
    answers = {r["id"]: r for r in await post_batch(emu, requests)}
    assert {k: a["status"] for k, a in answers.items()} == {"1": 200, "2": 200, "3": 204, "4": 204, "5": 200, "6": 400}
    assert answers["5"]["body"] == {k: policy[k] for k in ("@odata.type", "id", "displayName")}
    assert "defenderScanType" in answers["6"]["body"]["error"]["message"]
    assert (category["description"], connector["serverName"], autopilot["groupTag"]) == ("Batch", "mail.batch", "Batch")
    stats = emu.stats()["tenants"]["contoso"]
    assert stats["collections"]["managedDevices"]["actions"] == {"syncDevice": {device["id"]: 1}}
    assert stats["writes"] == 5


async def test_throttling_window_is_shared_by_every_collection(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """Writes to different collections fill one tenant's writes window together: with 4 writes per window, a
    category patch, an Autopilot action, a device action and a connector sync pass, and the fifth write, to
    yet another collection, is 429; another tenant is not affected."""
    emu = await make_emulator(writes_per_app=4, limit_window_s=600.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(emu))) as session:
        api, other = await _client_for(emu, session), await _client_for(emu, session, "fabrikam")
        writes = [
            ("PATCH", f"deviceCategories/{first(emu, 'deviceCategories')['id']}", {"description": "a"}),
            (
                "POST",
                f"windowsAutopilotDeviceIdentities/{first(emu, 'windowsAutopilotDeviceIdentities')['id']}"
                "/updateDeviceProperties",
                {"groupTag": "b"},
            ),
            ("POST", f"managedDevices/{first(emu, 'managedDevices')['id']}/syncDevice", None),
            ("POST", f"exchangeConnectors/{first(emu, 'exchangeConnectors')['id']}/sync", {"syncType": "fullSync"}),
        ]
        statuses = [(await api.send(method, path, body))[0] for method, path, body in writes]
        assert statuses == [200, 204, 204, 204]
        policy = first(emu, "deviceConfigurations")
        patch = {"@odata.type": policy["@odata.type"], "description": "c"}
        status, body = await api.send("PATCH", f"deviceConfigurations/{policy['id']}", patch)
        assert status == 429 and body["error"]["code"] == "TooManyRequests"
        assert (await api.send("GET", "deviceConfigurations"))[0] == 200  # reads have their own window
        theirs = first(emu, "deviceConfigurations", alias="fabrikam")
        patch = {"@odata.type": theirs["@odata.type"], "description": "c"}
        assert (await other.send("PATCH", f"deviceConfigurations/{theirs['id']}", patch))[0] == 200
    stats = emu.stats()["tenants"]["contoso"]
    assert stats["writes_admitted"] == 4 and stats["writes_throttled"] == 1
    assert stats["collections"]["deviceConfigurations"]["writes"] == 1
    assert stats["collections"]["deviceConfigurations"]["patches"] == 0


async def test_tenant_isolation_and_state_dump(emu: Emulator, client: Client) -> None:
    """Another tenant's object is 404 and counted as a cross-tenant attempt; the admin state holds every
    collection's objects by id, exactly as served."""
    theirs = first(emu, "managedDevices", alias="fabrikam")
    assert (await client.send("GET", f"managedDevices/{theirs['id']}"))[0] == 404
    assert emu.stats()["cross_tenant_attempts"] == 1
    state = emu.state()["tenants"]["contoso"]
    for name in COLLECTIONS:
        served = (await client.send("GET", name))[1]["value"]
        assert list(state[name].values()) == served


async def test_create_and_delete_in_any_collection(emu: Emulator, client: Client) -> None:
    """POST creates a category (201, Location, new id) and DELETE removes it; an abstract collection needs the
    concrete type; Autopilot devices can be created (Graph documents it) though not patched."""
    status, created = await client.send("POST", "deviceCategories", {"displayName": "New"})
    assert status == 201 and created["@odata.type"] == "#microsoft.graph.deviceCategory"
    assert (await client.send("GET", f"deviceCategories/{created['id']}"))[1] == created
    status, body = await client.send("POST", "deviceConfigurations", {"displayName": "x"})
    assert status == 400 and "abstract" in body["error"]["message"]
    status, created_policy = await client.send("POST", "deviceConfigurations", {"@odata.type": W10, "displayName": "x"})
    assert status == 201 and created_policy["version"] == 1 and created_policy["@odata.type"] == W10
    status, device = await client.send("POST", "windowsAutopilotDeviceIdentities", {"serialNumber": "PF0000001"})
    assert status == 201 and device["serialNumber"] == "PF0000001"
    assert (await client.send("PATCH", f"windowsAutopilotDeviceIdentities/{device['id']}", {"groupTag": "x"}))[0] == 405
    assert await client.send("DELETE", f"deviceCategories/{created['id']}") == (204, None)
    assert (await client.send("GET", f"deviceCategories/{created['id']}"))[0] == 404


@pytest.mark.parametrize("collection", SEEDED)
def test_sample_job_for_a_collection_is_valid(tmp_path: Path, collection: str) -> None:
    """--write-job-resource writes lines naming the collection whose patch or action the registry accepts."""
    core = EmulatorCore(EmulatorOptions(tenants=2, objects_per_collection=3), tmp_path)
    job = tmp_path / "job.jsonl"
    assert write_job(core, job, 8, resource=collection) == 8
    lines = [orjson.loads(raw) for raw in job.read_bytes().splitlines()]
    resource = registry.resource(collection)
    assert {line["tenant"] for line in lines} == {"contoso", "fabrikam"}
    for line in lines:
        assert line["resource"] == collection
        if "action" in line:
            assert registry.validate_action(resource, line["action"], line["params"]) == []
        else:
            assert registry.validate_patch(resource, line["patch"]) == []


def test_serve_refuses_an_unknown_collection_count() -> None:
    """--objects with a misspelt collection stops before serving, with a suggestion."""
    result = CliRunner().invoke(emulator_group, ["serve", "--objects", "managedDevice=3"])
    assert result.exit_code == 2
    assert "did you mean 'managedDevices'?" in result.output


async def test_connectors_keep_the_seed_table(emu: Emulator, client: Client) -> None:
    """Exchange Connectors are checked as they always were: a null lastSyncDateTime is accepted, a bad enum is not."""
    connector = first(emu, "exchangeConnectors")
    path = f"exchangeConnectors/{connector['id']}"
    status, body = await client.send("PATCH", path, {"lastSyncDateTime": None})
    assert status == 200 and body["lastSyncDateTime"] is None
    assert (await client.send("PATCH", path, {"status": "online"}))[0] == 400


async def test_world_file_loads_any_collection(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A --world file's collections are served as given; a declared type fills a missing @odata.type, and an
    abstract collection's object without one is refused when the world loads."""
    seed = generate_world(tenants=1, connectors_per_tenant=1, seed=3).to_json()
    seed["tenants"][0]["deviceCategories"] = [{"id": "cat-1", "displayName": "Kiosks"}]
    seed["tenants"][0]["deviceConfigurations"] = [{"id": "cfg-1", "@odata.type": IOS, "displayName": "iOS"}]
    path = tmp_path / "world.json"
    path.write_bytes(orjson.dumps(seed))
    emu = await make_emulator(world_file=path)
    contoso = tenant(emu, "contoso")
    assert contoso.store("deviceCategories")["cat-1"]["@odata.type"] == "#microsoft.graph.deviceCategory"
    assert contoso.store("deviceConfigurations")["cfg-1"]["@odata.type"] == IOS
    seed["tenants"][0]["deviceConfigurations"] = [{"id": "cfg-2", "displayName": "no type"}]
    path.write_bytes(orjson.dumps(seed))
    with pytest.raises(ValueError, match="abstract"):
        Emulator(EmulatorOptions(world_file=path, state_dir=tmp_path / "state"))
