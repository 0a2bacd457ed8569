"""Realistic Intune objects for the emulated tenants, generated deterministically from the seed.

Each ``(seed, tenant, collection)`` draws from its own random stream, so adding objects to one collection never
changes another collection's objects (nor the tenants, apps and connectors drawn before this module existed).
Values use the names, types and enum members of Graph's v1.0 metadata (``bulkconn.registry``): every seeded
object is a valid instance of its concrete type. Collections without a generator of their own get minimal
objects (``id``, ``@odata.type`` and, where the type has them, ``displayName`` and ``description``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

from bulkconn import registry

# The collections seeded by default (besides Exchange Connectors, counted by ``connectors_per_tenant``).
SEEDED = (
    "windowsAutopilotDeviceIdentities",
    "managedDevices",
    "deviceCategories",
    "deviceConfigurations",
    "deviceCompliancePolicies",
)

_HARDWARE = (
    ("Microsoft Corporation", "Surface Laptop 5", "0F"),
    ("LENOVO", "ThinkPad T14 Gen 3", "PF"),
    ("Dell Inc.", "Latitude 7440", "CN"),
    ("HP", "EliteBook 840 G9", "5CG"),
)
_GROUP_TAGS = ("Sales", "Finance", "Engineering", "Kiosk", "Shared", "")
_CATEGORIES = (
    ("Corporate laptops", "Laptops owned and issued by IT"),
    ("Kiosks", "Single-app devices in lobbies and stores"),
    ("Shared iPads", "iPads shared between shift workers"),
    ("Field devices", "Rugged phones and tablets used on site"),
    ("Executive", "Devices of the leadership team"),
    ("BYOD phones", "Personal phones with work apps"),
    ("Lab machines", "Test and build machines"),
    ("Point of sale", "Tills and payment terminals"),
)
# (concrete type, display name prefix, one type-specific property and its value)
_CONFIGURATIONS = (
    ("windows10GeneralConfiguration", "Win10 - Device restrictions", "defenderScanType", "quick"),
    ("windows10EndpointProtectionConfiguration", "Win10 - Endpoint protection", "firewallBlockStatefulFTP", True),
    ("iosGeneralDeviceConfiguration", "iOS - Device restrictions", "airDropBlocked", True),
    ("androidGeneralDeviceConfiguration", "Android - Device restrictions", "cameraBlocked", False),
    ("macOSGeneralDeviceConfiguration", "macOS - Password policy", "passwordMinimumLength", 12),
)
_COMPLIANCE = (
    ("windows10CompliancePolicy", "Windows - Require BitLocker", "bitLockerEnabled", True),
    ("iosCompliancePolicy", "iOS - Minimum OS version", "osMinimumVersion", "16.0"),
    ("androidCompliancePolicy", "Android - Require a password", "passwordMinimumLength", 6),
    ("macOSCompliancePolicy", "macOS - Firewall on", "firewallEnabled", True),
)
_PLATFORMS = (
    ("Windows", "10.0.22631.{}", "DESKTOP-{}", "windowsAzureADJoin"),
    ("iOS", "17.{}", "iPhone-{}", "appleBulkWithUser"),
    ("Android", "14.0.{}", "Pixel-{}", "userEnrollment"),
    ("macOS", "14.{}", "MacBook-{}", "appleBulkWithUser"),
)
_USERS = ("adele", "alex", "diego", "grady", "isaiah", "johanna", "lynne", "megan", "nestor", "patti")


def guid(rng: random.Random) -> str:
    """A version-4 GUID drawn from ``rng`` (deterministic for a seeded stream)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def timestamp(rng: random.Random, year: int = 2026) -> str:
    """An Edm.DateTimeOffset in ``year`` with Graph's seven fractional digits."""
    return (
        f"{year}-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 9999999):07d}Z"
    )


def _odata(name: str) -> str:
    return f"#microsoft.graph.{name}"


def _autopilot(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
    manufacturer, model, prefix = rng.choice(_HARDWARE)
    enrolled = rng.random() < 0.7
    return {
        "@odata.type": _odata("windowsAutopilotDeviceIdentity"),
        "id": guid(rng),
        "groupTag": rng.choice(_GROUP_TAGS),
        "purchaseOrderIdentifier": f"PO-{rng.randint(10000, 99999)}",
        "serialNumber": f"{prefix}{rng.randint(10**6, 10**7 - 1)}",
        "productKey": "",
        "manufacturer": manufacturer,
        "model": model,
        "enrollmentState": "enrolled" if enrolled else "notContacted",
        "lastContactedDateTime": timestamp(rng) if enrolled else "0001-01-01T00:00:00Z",
        "addressableUserName": "",
        "userPrincipalName": "",
        "resourceName": "",
        "skuNumber": "",
        "systemFamily": "",
        "azureActiveDirectoryDeviceId": guid(rng),
        "managedDeviceId": guid(rng) if enrolled else "00000000-0000-0000-0000-000000000000",
        "displayName": "",
    }


def _managed_device(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
    system, version, name, enrollment = rng.choice(_PLATFORMS)
    manufacturer, model, prefix = rng.choice(_HARDWARE)
    user = rng.choice(_USERS)
    enrolled = timestamp(rng, 2025)
    return {
        "@odata.type": _odata("managedDevice"),
        "id": guid(rng),
        "deviceName": name.format(f"{rng.randint(0, 16**7 - 1):07X}"),
        "managedDeviceName": f"{user}_{system}_{enrolled[:10]}",
        "operatingSystem": system,
        "osVersion": version.format(rng.randint(1, 9)),
        "managedDeviceOwnerType": rng.choice(("company", "company", "personal")),
        "complianceState": rng.choice(("compliant", "compliant", "noncompliant", "inGracePeriod")),
        "managementAgent": "mdm",
        "managementState": "managed",
        "deviceEnrollmentType": enrollment,
        "enrolledDateTime": enrolled,
        "lastSyncDateTime": timestamp(rng),
        "userPrincipalName": f"{user}@{domain}",
        "emailAddress": f"{user}@{domain}",
        "userDisplayName": user.capitalize(),
        "serialNumber": f"{prefix}{rng.randint(10**6, 10**7 - 1)}",
        "manufacturer": manufacturer
        if system == "Windows"
        else {"iOS": "Apple", "macOS": "Apple"}.get(system, "Google"),
        "model": model if system == "Windows" else {"iOS": "iPhone 15", "macOS": "MacBook Air"}.get(system, "Pixel 8"),
        "azureADDeviceId": guid(rng),
        "isEncrypted": rng.random() < 0.9,
        "notes": None,
        "deviceActionResults": [],
    }


def _category(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
    name, description = _CATEGORIES[n % len(_CATEGORIES)]
    suffix = f" {n // len(_CATEGORIES) + 1}" if n >= len(_CATEGORIES) else ""
    return {
        "@odata.type": _odata("deviceCategory"),
        "id": guid(rng),
        "displayName": name + suffix,
        "description": description,
    }


def _policy(choices: tuple[tuple[str, str, str, Any], ...]) -> Callable[[random.Random, int, str], dict[str, Any]]:
    def make(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
        kind, title, prop, value = choices[n % len(choices)]
        created = timestamp(rng, 2025)
        return {
            "@odata.type": _odata(kind),
            "id": guid(rng),
            "displayName": f"{title}" + (f" ({n // len(choices) + 1})" if n >= len(choices) else ""),
            "description": f"{title}, managed by the {domain.split('.')[0].capitalize()} endpoint team",
            "version": rng.randint(1, 8),
            "createdDateTime": created,
            "lastModifiedDateTime": timestamp(rng),
            prop: value,
        }

    return make


def _minimal(collection: str) -> Callable[[random.Random, int, str], dict[str, Any]]:
    entity = registry.resource(collection).entity_type
    kind = entity.concrete[0] if entity.concrete else entity.name

    def make(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"@odata.type": _odata(kind), "id": guid(rng)}
        for name in ("displayName", "description"):
            if name in entity.properties:
                obj[name] = f"{collection} {n + 1}"
        return obj

    return make


_MAKERS: dict[str, Callable[[random.Random, int, str], dict[str, Any]]] = {
    "windowsAutopilotDeviceIdentities": _autopilot,
    "managedDevices": _managed_device,
    "deviceCategories": _category,
    "deviceConfigurations": _policy(_CONFIGURATIONS),
    "deviceCompliancePolicies": _policy(_COMPLIANCE),
}


def seed_collection(collection: str, count: int, *, seed: int, tenant_index: int, domain: str) -> list[dict[str, Any]]:
    """``count`` objects of ``collection`` for one tenant, the same for the same seed and tenant.

    Raises:
        bulkconn.registry.UnknownResourceError: ``collection`` is not a ``/deviceManagement`` collection.
    """
    maker = _MAKERS.get(collection) or _minimal(collection)
    rng = random.Random(f"bulkconn-emulator:{seed}:{tenant_index}:{collection}")
    return [maker(rng, n, domain) for n in range(count)]
