"""Graph JSON values compared by meaning: what selectors, plan, --skip-unchanged and conflicts rely on."""

from __future__ import annotations

import pytest

from bulkconn.registry import Kind, TypeRef, resource
from bulkconn.values import Change, diff, same_value

DTO = TypeRef("Edm.DateTimeOffset", Kind.PRIMITIVE)
GUID = TypeRef("Edm.Guid", Kind.PRIMITIVE)
BOOL = TypeRef("Edm.Boolean", Kind.PRIMITIVE)
INT = TypeRef("Edm.Int32", Kind.PRIMITIVE)
TEXT = TypeRef("Edm.String", Kind.PRIMITIVE)
FLAGS = TypeRef("windowsStartMenuAppListVisibilityType", Kind.ENUM)
STATUS = TypeRef("deviceManagementExchangeConnectorStatus", Kind.ENUM)
MALWARE = TypeRef("defenderDetectedMalwareActions", Kind.COMPLEX)
W10 = "#microsoft.graph.windows10GeneralConfiguration"


@pytest.mark.parametrize(
    ("ref", "current", "wanted", "same"),
    [
        (DTO, "2026-01-01T10:00:00Z", "2026-01-01T11:00:00+01:00", True),
        (DTO, "2026-01-01T10:00:00.1234567Z", "2026-01-01T10:00:00.1234560Z", False),  # the 7th digit counts
        (DTO, "2026-01-01T10:00:00.5Z", "2026-01-01T10:00:00.5000000Z", True),
        (DTO, "2026-01-01T10:00:00Z", "2026-01-01T10:00:01Z", False),
        (GUID, "0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e", True),
        (TEXT, "Mail.contoso.com", "mail.contoso.com", False),  # text is compared exactly
        (BOOL, True, 1, False),
        (INT, 5, 5.0, True),
        (STATUS, "connected", "connected", True),
        (STATUS, "Connected", "connected", False),  # member names as Graph returns them
        (FLAGS, "collapse,remove", "remove, collapse", True),
        (FLAGS, "collapse", "collapse,remove", False),
        (TEXT, None, None, True),
        (TEXT, None, "", False),
        (TypeRef("Edm.String", Kind.PRIMITIVE, collection=True), ["a", "b"], ["b", "a"], False),
        (
            MALWARE,
            {"lowSeverity": "clean", "highSeverity": "block"},
            {"highSeverity": "block", "lowSeverity": "clean"},
            True,
        ),
        (MALWARE, {"lowSeverity": "clean", "highSeverity": "block"}, {"lowSeverity": "clean"}, False),
        (None, {"a": [1, True]}, {"a": [1, True]}, True),
        (None, {"a": [1, True]}, {"a": [1, 1]}, False),
    ],
)
def test_same_value_compares_by_meaning(ref: TypeRef | None, current: object, wanted: object, same: bool) -> None:
    """Instants, GUID case, flag sets, null and nested objects compare as Graph means them; text exactly."""
    assert same_value(ref, current, wanted) is same


def test_diff_lists_only_the_properties_that_would_change() -> None:
    """A missing property is null; @odata.type in a patch is not a change; old and new are reported."""
    connectors = resource("exchangeConnectors")
    current = {
        "id": "x",
        "serverName": "old.contoso.com",
        "status": "connected",
        "lastSyncDateTime": "2026-01-01T10:00:00Z",
    }
    patch = {
        "@odata.type": "#microsoft.graph.deviceManagementExchangeConnector",
        "serverName": "new.contoso.com",
        "status": "connected",
        "lastSyncDateTime": "2026-01-01T05:00:00-05:00",
        "exchangeAlias": None,
    }
    assert diff(connectors, current, patch) == (Change("serverName", "old.contoso.com", "new.contoso.com"),)


def test_diff_uses_the_objects_concrete_type_in_an_abstract_collection() -> None:
    """A derived type's boolean is compared as a boolean (true is not 1), found through the object's @odata.type."""
    configurations = resource("deviceConfigurations")
    current = {"@odata.type": W10, "id": "c", "cameraBlocked": True}
    assert diff(configurations, current, {"cameraBlocked": True}) == ()
    assert diff(configurations, current, {"cameraBlocked": 1}) == (Change("cameraBlocked", True, 1),)
