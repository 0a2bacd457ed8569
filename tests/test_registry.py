"""The generated registry of /deviceManagement collections, its generator, and validation against it."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bulkconn import registry
from bulkconn.registry import (
    Kind,
    TypeRef,
    UnknownResourceError,
    check_value,
    collections,
    resource,
    validate_action,
    validate_patch,
)
from bulkconn.resources import EXCHANGE_CONNECTOR
from tests.test_emulator_graph import SEED_REQUEST

ROOT = Path(__file__).resolve().parent.parent
METADATA = ROOT / "tools" / "graph-metadata" / "v1.0-cleanMetadata.xml.gz"
GENERATED = ("bulkconn/registry_data.json", "bulkconn/registry_data.LICENSE", "docs/resources.md")
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
W10 = "#microsoft.graph.windows10GeneralConfiguration"


@functools.cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_registry", ROOT / "tools" / "generate_registry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _messages(problems: list[Any]) -> str:
    return " | ".join(f"{p.property}: {p.message}" for p in problems)


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    """Rerunning the generator on the committed metadata gives exactly the committed registry, notice and doc."""
    _generator().main(["--out", str(tmp_path)])
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_generator_refuses_an_override_the_metadata_does_not_have(tmp_path: Path) -> None:
    """A typo in the override list stops the generator instead of protecting nothing."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('[types.deviceCategory]\ndisplayNam = "typo"\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="displayNam"):
        _generator().main(["--out", str(tmp_path), "--overrides", str(overrides)])


@pytest.mark.parametrize(
    ("entry", "refusal"),
    [
        ("[actions.managedDevice.wipee]\nidempotent = true\n", "has no bound action 'wipee'"),
        ("[actions.managedDevice.cleanWindowsDevice]\nidempotent = true\nundoable = true\n", "keepUserData"),
        ("[actions.deviceEnrollmentConfiguration.setPriority]\nundoable = true\n", "must be idempotent"),
    ],
)
def test_generator_refuses_an_action_flag_it_cannot_check(tmp_path: Path, entry: str, refusal: str) -> None:
    """An action flag names a real bound action; 'undoable' needs an idempotent action whose every parameter is a
    property of the object (so that its pre-image can be sent back)."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(entry, encoding="utf-8")
    with pytest.raises(SystemExit, match=refusal):
        _generator().main(["--out", str(tmp_path), "--overrides", str(overrides)])


def test_every_device_management_collection_is_a_resource() -> None:
    """Counted straight from the CSDL: every contained collection of deviceManagement is in the registry."""
    with gzip.open(METADATA) as stream:
        root = ET.parse(stream).getroot()
    graph = next(s for s in root.iter(f"{EDM}Schema") if s.get("Namespace") == "microsoft.graph")
    singleton = next(t for t in graph.iter(f"{EDM}EntityType") if t.get("Name") == "deviceManagement")
    expected = {
        nav.get("Name")
        for nav in singleton.iter(f"{EDM}NavigationProperty")
        if nav.get("ContainsTarget") == "true" and nav.get("Type", "").startswith("Collection(")
    }
    assert len(expected) == 46
    assert set(collections()) == expected
    for name in expected:
        assert resource(name).path == f"deviceManagement/{name}"


# The property table of the seed page, Microsoft Learn "Update deviceManagementExchangeConnector".
SEED_TABLE = {
    "id": "Edm.String",
    "lastSyncDateTime": "Edm.DateTimeOffset",
    "status": ("none", "connectionPending", "connected", "disconnected", "unknownFutureValue"),
    "primarySmtpAddress": "Edm.String",
    "serverName": "Edm.String",
    "connectorServerName": "Edm.String",
    "exchangeConnectorType": ("onPremises", "hosted", "serviceToService", "dedicated", "unknownFutureValue"),
    "version": "Edm.String",
    "exchangeAlias": "Edm.String",
    "exchangeOrganization": "Edm.String",
}


def test_exchange_connector_entry_equals_the_seed_table() -> None:
    """Same property names, types and enum members as Graph's Exchange Connector update page, and only the key is protected."""
    connector = resource("exchangeConnectors")
    assert connector.odata_type == "#microsoft.graph.deviceManagementExchangeConnector"
    props = connector.entity_type.properties
    found = {
        name: registry.enum_members(p.type.name) if p.type.kind is Kind.ENUM else p.type.name
        for name, p in props.items()
    }
    assert found == SEED_TABLE
    assert [name for name, p in props.items() if p.read_only] == ["id"]
    assert set(props) == set(EXCHANGE_CONNECTOR.properties)  # the hand-written entry it will replace


def test_exchange_connector_sync_action_takes_sync_type() -> None:
    """sync is bound to one connector and needs syncType, fullSync or deltaSync."""
    connector = resource("exchangeConnectors")
    sync = connector.actions["sync"]
    assert not sync.on_collection
    assert list(sync.parameters) == ["syncType"]
    assert registry.enum_members(sync.parameters["syncType"].name) == ("fullSync", "deltaSync")
    assert validate_action(connector, "sync", {"syncType": "deltaSync"}) == []
    assert "required" in _messages(validate_action(connector, "sync", {}))


def test_the_seed_example_patch_is_valid() -> None:
    """The seed page's example request body passes as it is."""
    assert validate_patch(resource("exchangeConnectors"), SEED_REQUEST) == []


def test_autopilot_update_device_properties_parameters() -> None:
    """The four documented parameters, all optional text; group tags are changed by action, not by PATCH."""
    autopilot = resource("windowsAutopilotDeviceIdentities")
    action = autopilot.actions["updateDeviceProperties"]
    assert {name: (ref.name, ref.nullable) for name, ref in action.parameters.items()} == {
        "userPrincipalName": ("Edm.String", True),
        "addressableUserName": ("Edm.String", True),
        "groupTag": ("Edm.String", True),
        "displayName": ("Edm.String", True),
    }
    assert validate_action(autopilot, "updateDeviceProperties", {"groupTag": "Sales"}) == []
    assert "must be text, not a number" in _messages(
        validate_action(autopilot, "updateDeviceProperties", {"groupTag": 7})
    )
    refused = validate_patch(autopilot, {"groupTag": "Sales"})
    assert len(refused) == 1 and "updateDeviceProperties" in refused[0].message


def test_abstract_device_configuration_needs_a_concrete_odata_type() -> None:
    """Without @odata.type the patch is refused and the concrete kinds are listed."""
    configs = resource("deviceConfigurations")
    assert configs.entity_type.abstract
    problems = validate_patch(configs, {"description": "x"})
    assert [p.property for p in problems] == ["@odata.type"]
    assert "abstract" in problems[0].message and "windows10GeneralConfiguration," in problems[0].message


def test_abstract_type_validates_against_the_named_derived_type() -> None:
    """Properties of the named concrete type are accepted and checked; those of a sibling type are not."""
    configs = resource("deviceConfigurations")
    assert validate_patch(configs, {"@odata.type": W10, "description": "x", "defenderScanType": "quick"}) == []
    assert validate_patch(configs, {"description": "x", "defenderScanType": "quick"}, odata_type=W10) == []
    sibling = validate_patch(
        configs, {"@odata.type": "#microsoft.graph.iosGeneralDeviceConfiguration", "defenderScanType": "quick"}
    )
    assert [p.property for p in sibling] == ["defenderScanType"]
    disagree = validate_patch(configs, {"@odata.type": W10}, odata_type="#microsoft.graph.iosCustomConfiguration")
    assert [p.property for p in disagree] == ["@odata.type"]


@pytest.mark.parametrize(
    ("problems", "hint"),
    [
        (lambda: validate_patch(resource("exchangeConnectors"), {"serverNme": "x"}), "did you mean 'serverName'?"),
        (lambda: validate_patch(resource("exchangeConnectors"), {"status": "conected"}), "did you mean 'connected'?"),
        (lambda: validate_action(resource("exchangeConnectors"), "sinc", {}), "did you mean 'sync'?"),
        (
            lambda: validate_action(
                resource("windowsAutopilotDeviceIdentities"), "updateDeviceProperties", {"grouptag": "x"}
            ),
            "did you mean 'groupTag'?",
        ),
        (
            lambda: validate_patch(
                resource("deviceConfigurations"), {"@odata.type": "#microsoft.graph.windows10GeneralConfig"}
            ),
            f"did you mean '{W10}'?",
        ),
    ],
)
def test_near_misses_get_a_did_you_mean(problems: Any, hint: str) -> None:
    """Misspelt properties, enum members, actions, parameters and types are answered with the near name."""
    assert hint in _messages(problems())


def test_unknown_collection_suggests_the_near_one() -> None:
    """'exchangeConnector' (today's job resource name) points at the collection name."""
    with pytest.raises(UnknownResourceError, match="did you mean 'exchangeConnectors'"):
        resource("exchangeConnector")


def test_read_only_properties_are_refused_with_their_reason() -> None:
    """Override list: keys, service timestamps, service-owned versions and managedDevice inventory."""
    devices = resource("managedDevices")
    assert validate_patch(devices, {"managedDeviceName": "kiosk-7", "notes": "lobby"}) == []
    assert "cannot be set: it is read-only" in _messages(validate_patch(devices, {"serialNumber": "X1"}))
    configs = resource("deviceConfigurations")
    problems = validate_patch(configs, {"@odata.type": W10, "version": 4, "createdDateTime": "2024-01-01T00:00:00Z"})
    assert [p.property for p in problems] == ["version", "createdDateTime"]
    assert "which Intune increments" in problems[0].message
    category = resource("deviceCategories")
    assert validate_patch(category, {"displayName": "Kiosks", "description": None}) == []
    assert "key" in _messages(validate_patch(category, {"id": "abc"}))


def test_the_emulator_may_accept_the_objects_own_id() -> None:
    """As today's Exchange Connector: the object's own id may be repeated, never changed."""
    connector = resource("exchangeConnectors")
    assert validate_patch(connector, {"id": "ABC", "serverName": "x"}, current_id="abc") == []
    assert [p.property for p in validate_patch(connector, {"id": "other"}, current_id="abc")] == ["id"]


def test_actions_bound_to_another_kind_are_refused_for_that_object() -> None:
    """An action bound to a type applies to objects of that type or a derived one only."""
    devices = resource("managedDevices")
    assert validate_action(devices, "syncDevice", {}, odata_type="#microsoft.graph.managedDevice") == []
    problems = validate_action(devices, "syncDevice", {}, odata_type="#microsoft.graph.deviceCategory")
    assert [p.property for p in problems] == ["action"]


def test_relationships_cannot_be_patched() -> None:
    """A navigation property is named as a relationship, not as an unknown property."""
    problems = validate_patch(resource("managedDevices"), {"deviceCategory": {"displayName": "x"}})
    assert "is a relationship" in _messages(problems)


def _ref(name: str, kind: Kind = Kind.PRIMITIVE, *, collection: bool = False, nullable: bool = True) -> TypeRef:
    return TypeRef(name, kind, collection, nullable)


@pytest.mark.parametrize(
    ("edm", "good", "bad", "message"),
    [
        ("Edm.String", "text", 5, "must be text, not a number"),
        ("Edm.Boolean", False, "false", "must be true or false, not text"),
        ("Edm.Int32", 2**31 - 1, 2**31, "from -2147483648 to 2147483647"),
        ("Edm.Int32", -(2**31), 1.5, "must be a whole number, not 1.5"),
        ("Edm.Int32", 3, True, "must be a whole number, not true/false"),
        ("Edm.Int64", 2**63 - 1, 2**63, "out of range"),
        ("Edm.Double", 2.5, "2.5", "must be a number, not text"),
        (
            "Edm.DateTimeOffset",
            "2017-01-01T00:02:49.3205976-08:00",
            "2017-01-01T00:02:49",
            "date and time with an offset",
        ),
        ("Edm.Date", "2024-02-29", "2023-02-29", "a date like"),
        ("Edm.TimeOfDay", "13:45:00", "25:00", "a time of day"),
        ("Edm.Duration", "PT1H30M", "1 hour", "a duration"),
        ("Edm.Guid", "0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b", "a GUID"),
        ("Edm.Binary", "aGVsbG8=", "not base64!", "base64-encoded bytes"),
    ],
)
def test_primitive_type_checks(edm: str, good: Any, bad: Any, message: str) -> None:
    """Each Edm type accepts a well-formed value and refuses a wrong one in plain words."""
    assert check_value(_ref(edm), good, "p") == []
    problems = check_value(_ref(edm), bad, "p")
    assert len(problems) == 1 and message in problems[0].message and problems[0].property == "p"


def test_nullability_follows_the_metadata() -> None:
    """null is accepted only where the metadata allows it; a list property needs a list."""
    connector = resource("exchangeConnectors")
    assert validate_patch(connector, {"serverName": None}) == []
    assert "cannot be null" in _messages(validate_patch(connector, {"status": None}))
    assert "must be a list" in _messages(check_value(_ref("Edm.String", collection=True), None, "tags"))


def test_flag_enums_accept_combinations() -> None:
    """A flags enum takes comma-separated members; each one is checked."""
    ref = _ref("sharedPCAllowedAccountType", Kind.ENUM)
    assert check_value(ref, "guest,domain", "accounts") == []
    assert "cannot be 'guests'" in _messages(check_value(ref, "guests,domain", "accounts"))


def test_nested_objects_and_lists_name_the_path() -> None:
    """Complex values are checked recursively, with abstract complex types needing @odata.type too."""
    configs = resource("deviceConfigurations")
    problems = validate_action(configs, "assign", {"assignments": [{"target": {"groupId": "g"}}]})
    assert [p.property for p in problems] == ["assignments[0].target.@odata.type"]
    target = {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": 5}
    problems = validate_action(configs, "assign", {"assignments": [{"target": target}]})
    assert (
        _messages(problems)
        == "assignments[0].target.groupId: 'assignments[0].target.groupId' must be text, not a number"
    )


def test_a_collection_decodes_only_the_entries_it_leads_to() -> None:
    """Looking up one collection (in a fresh interpreter) decodes the types and enums it leads to, not the file's."""
    probe = (
        "from bulkconn import registry\n"
        "registry.resource('exchangeConnectors')\n"
        "data = registry._data()\n"
        "print(registry._type_entry.cache_info().currsize, len(data.types),"
        " registry._enum_entry.cache_info().currsize, len(data.enums))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    types, all_types, enums, all_enums = map(int, done.stdout.split())
    assert 0 < types <= 20 < all_types
    assert enums <= 5 < all_enums
