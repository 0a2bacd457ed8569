"""The emulator's data: tenants, their registered apps, and their Intune objects.

Each tenant holds one store per ``/deviceManagement`` collection (collection name -> lower-case id ->
object with ``id``, ``@odata.type`` and its properties); Exchange Connectors are one of them. Generated
deterministically from ``(tenants, connectors_per_tenant, objects per collection, seed)`` or loaded from a
JSON file of the same shape as :meth:`World.to_json`. Secrets are derived from the seed: this is a local
rehearsal service, never a place for real credentials.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bulkconn import registry
from bulkconn.emulator.seeding import guid as _guid
from bulkconn.emulator.seeding import seed_collection
from bulkconn.resources import EXCHANGE_CONNECTOR, WRITE_ROLES

CONNECTORS = "exchangeConnectors"
READ_ROLES = WRITE_ROLES | {
    "DeviceManagementServiceConfig.Read.All",
    "DeviceManagementConfiguration.Read.All",
    "DeviceManagementManagedDevices.Read.All",
}

_ALIASES = (
    "contoso",
    "fabrikam",
    "northwind",
    "adatum",
    "litware",
    "tailspin",
    "wingtip",
    "woodgrove",
    "proseware",
    "lucerne",
)


def thumbprint_sha1(cert_pem: str) -> str:
    """Upper-case hex SHA-1 of a PEM certificate's DER, as Entra shows thumbprints."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the x5t thumbprint is SHA-1 by spec


@dataclass(slots=True)
class App:
    """An app registration with its credentials and its granted application permissions."""

    client_id: str
    display_name: str
    roles: frozenset[str]
    secrets: list[str] = field(default_factory=list)
    certificates: dict[str, str] = field(default_factory=dict)  # SHA-1 thumbprint -> PEM
    public_client: bool = False

    def add_certificate(self, cert_pem: str) -> str:
        thumb = thumbprint_sha1(cert_pem)
        self.certificates[thumb] = cert_pem
        return thumb

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "display_name": self.display_name,
            "roles": sorted(self.roles),
            "secrets": list(self.secrets),
            "certificates": list(self.certificates.values()),
            "public_client": self.public_client,
        }


@dataclass(slots=True)
class Tenant:
    """One customer tenant: identity (id, domain), apps, and the Intune objects."""

    tenant_id: str
    domain: str
    alias: str
    apps: dict[str, App] = field(default_factory=dict)
    # collection name -> lower-case id -> object (with "id" and "@odata.type")
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def connectors(self) -> dict[str, dict[str, Any]]:
        """The Exchange Connectors: lower-case id -> entity."""
        return self.store(CONNECTORS)

    def store(self, collection: str) -> dict[str, dict[str, Any]]:
        """One collection's objects (lower-case id -> object), created empty on first use."""
        return self.objects.setdefault(collection, {})

    def add(self, collection: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` (which has an ``id``) in ``collection``."""
        self.store(collection)[str(obj["id"]).lower()] = obj

    def writer_app(self) -> App:
        """The first app holding a write role (the one ``--write-config`` hands out)."""
        for app in self.apps.values():
            if app.roles & WRITE_ROLES and app.secrets:
                return app
        raise LookupError(f"tenant {self.alias} has no app with a write role")

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "domain": self.domain,
            "alias": self.alias,
            "apps": [a.to_json() for a in self.apps.values()],
            CONNECTORS: list(self.connectors.values()),
        } | {name: list(objs.values()) for name, objs in self.objects.items() if name != CONNECTORS}


@dataclass(slots=True)
class World:
    """Every tenant, addressable by id, by verified domain, or by alias."""

    tenants: dict[str, Tenant] = field(default_factory=dict)  # tenant_id -> Tenant

    def find(self, name: str) -> Tenant | None:
        key = name.lower()
        for tenant in self.tenants.values():
            if key in (tenant.tenant_id, tenant.domain.lower()):
                return tenant
        return None

    def tenant_of(self, collection: str, object_id: str) -> Tenant | None:
        """The tenant holding object ``object_id`` of ``collection``, if any."""
        key = object_id.lower()
        for tenant in self.tenants.values():
            if key in tenant.objects.get(collection, {}):
                return tenant
        return None

    def to_json(self) -> dict[str, Any]:
        return {"tenants": [t.to_json() for t in self.tenants.values()]}


def _secret(seed: int, tenant_index: int, app_name: str) -> str:
    digest = hashlib.sha256(f"bulkconn-emulator:{seed}:{tenant_index}:{app_name}".encode()).hexdigest()
    return f"emu~{digest[:34]}"


def make_connector(rng: random.Random, domain: str, org: str, index: int) -> dict[str, Any]:
    """A realistic connector entity (every documented property present, as a GET returns it)."""
    day = rng.randint(1, 28)
    return {
        "@odata.type": EXCHANGE_CONNECTOR.odata_type,
        "id": _guid(rng),
        "lastSyncDateTime": f"2026-{rng.randint(1, 11):02d}-{day:02d}T{rng.randint(0, 23):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 9999999):07d}Z",
        "status": rng.choice(registry.enum_members("deviceManagementExchangeConnectorStatus")[1:4]),
        "primarySmtpAddress": f"intune-connector{index}@{domain}",
        "serverName": f"mail{index}.{domain}",
        "connectorServerName": f"EXCON{index:02d}",
        "exchangeConnectorType": rng.choice(registry.enum_members("deviceManagementExchangeConnectorType")[:4]),
        "version": f"19.{rng.randint(0, 3)}.{rng.randint(100, 999)}.{rng.randint(1, 60)}",
        "exchangeAlias": f"exch{index}",
        "exchangeOrganization": f"{org} Exchange",
    }


def generate_world(
    *,
    tenants: int,
    connectors_per_tenant: int,
    seed: int,
    sizes: Mapping[str, int] | None = None,
    shared_app: bool = False,
) -> World:
    """Build ``tenants`` tenants with ``connectors_per_tenant`` connectors each, deterministically.

    ``sizes`` (collection -> objects per tenant) adds seeded objects of other collections
    (:mod:`bulkconn.emulator.seeding`); they come from their own random streams, so the tenants, apps and
    connectors are the same with or without them. ``shared_app`` puts one multi-tenant ``bulkconn`` app (the
    first tenant's: same client id, secret and permissions) in every tenant instead of one app per tenant; the
    tenants, their other apps and their objects are the same either way.
    """
    rng = random.Random(seed)
    world = World()
    shared: App | None = None
    for index in range(tenants):
        alias = _ALIASES[index] if index < len(_ALIASES) else f"tenant{index + 1}"
        domain = f"{alias}.onmicrosoft.com"
        tenant = Tenant(tenant_id=_guid(rng), domain=domain, alias=alias)
        writer = App(
            client_id=_guid(rng),
            display_name="bulkconn",
            roles=frozenset({"DeviceManagementServiceConfig.ReadWrite.All"}),
            secrets=[_secret(seed, index, "bulkconn")],
        )
        reader = App(
            client_id=_guid(rng),
            display_name="bulkconn-readonly",
            roles=frozenset({"DeviceManagementServiceConfig.Read.All"}),
            secrets=[_secret(seed, index, "readonly")],
        )
        admin_cli = App(
            client_id=_guid(rng),
            display_name="bulkconn-admin-cli",
            roles=frozenset({"DeviceManagementServiceConfig.ReadWrite.All"}),
            public_client=True,
        )
        if shared_app:
            shared = shared or writer
            writer = shared
        tenant.apps = {a.client_id: a for a in (writer, reader, admin_cli)}
        org = alias.capitalize()
        for n in range(connectors_per_tenant):
            entity = make_connector(rng, domain, org, n + 1)
            tenant.connectors[entity["id"].lower()] = entity
        for collection, count in (sizes or {}).items():
            for obj in seed_collection(collection, count, seed=seed, tenant_index=index, domain=domain):
                tenant.add(collection, obj)
        world.tenants[tenant.tenant_id] = tenant
    return world


def load_world(path: Path) -> World:
    """Load tenants from a JSON file shaped like :meth:`World.to_json`."""
    data = orjson.loads(path.read_bytes())
    world = World()
    for raw in data["tenants"]:
        tenant = Tenant(tenant_id=raw["tenant_id"].lower(), domain=raw["domain"], alias=raw["alias"])
        for raw_app in raw.get("apps", []):
            app = App(
                client_id=raw_app["client_id"].lower(),
                display_name=raw_app.get("display_name", "app"),
                roles=frozenset(raw_app.get("roles", [])),
                secrets=list(raw_app.get("secrets", [])),
                public_client=bool(raw_app.get("public_client", False)),
            )
            for pem in raw_app.get("certificates", []):
                app.add_certificate(pem)
            tenant.apps[app.client_id] = app
        tenant.store(CONNECTORS)
        for name in registry.collections():
            for obj in raw.get(name, []):
                tenant.add(name, _loaded(name, obj))
        world.tenants[tenant.tenant_id] = tenant
    return world


def _loaded(collection: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a loaded object with its ``@odata.type`` (the declared type when the file leaves it out).

    Raises:
        ValueError: the object has no ``id``, or no ``@odata.type`` where the collection's type is abstract.
    """
    if not isinstance(obj, dict) or "id" not in obj:
        raise ValueError(f"every object of {collection} needs an 'id'")
    out = dict(obj)
    if "@odata.type" not in out:
        declared = registry.resource(collection).entity_type
        if declared.abstract:
            raise ValueError(f"{collection} object {obj['id']} needs an '@odata.type' ({declared.name} is abstract)")
        out = {"@odata.type": declared.odata_type} | out
    return out
