"""Files the emulator writes for clients: a bulkconn configuration and a sample job.

The configuration is the format ``bulkconn.config`` reads (see ``docs/configuration.md``). Secrets
are not written into it: each tenant's client secret goes to its own file in a folder readable only
by the owner, referenced with ``client_secret_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from bulkconn import registry
from bulkconn.emulator.core import EmulatorCore
from bulkconn.emulator.state import Tenant
from bulkconn.private import write_private


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    core: EmulatorCore, ca_file: Path, path: Path, *, overrides: Mapping[str, Mapping[str, int | float | str]] = {}
) -> Path:
    """Write a configuration for every emulated tenant; return the secrets folder.

    ``overrides`` adds keys to a tenant's table (the demo uses it to over-pace one tenant).
    """
    path = path.resolve()
    secrets_dir = path.parent / f"{path.stem}.secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    opts = core.options
    lines = [
        "# Written by `bulkconn emulator serve --write-config`: the emulated tenants.",
        "# Secrets live in the folder next to this file, readable only by you.",
        "[defaults]",
        f"graph_url = {_toml_str(core.base_url)}",
        f"authority_host = {_toml_str(core.base_url)}",
        f"ca_bundle = {_toml_str(str(ca_file.resolve()))}",
        'api_version = "v1.0"',
        "# The emulator's default throttling window and write limit (20 s x time scale unless --window-s);",
        "# tenants given other limits with --tenant-limit are over-paced here on purpose.",
        f"window_s = {opts.window_s!r}",
        f"writes_per_20s = {opts.writes_per_app}",
        "",
    ]
    for tenant in core.world.tenants.values():
        app = tenant.writer_app()
        secret_file = secrets_dir / f"{tenant.alias}.secret"
        write_private(secret_file, app.secrets[0] + "\n")
        lines += [
            f"[tenants.{tenant.alias}]",
            f"tenant_id = {_toml_str(tenant.tenant_id)}",
            f"client_id = {_toml_str(app.client_id)}",
            f"client_secret_file = {_toml_str(str(secret_file))}",
        ]
        for key, value in overrides.get(tenant.alias, {}).items():
            lines.append(f"{key} = {_toml_str(value) if isinstance(value, str) else value!r}")
        lines.append("")
    path.write_text("\n".join(lines))
    return secrets_dir


def write_job(core: EmulatorCore, path: Path, ops: int, *, resource: str = "exchangeConnectors") -> int:
    """Write a valid job of ``ops`` operations spread over every tenant's objects of ``resource``.

    The requested values depend only on the object, so a job longer than the number of objects
    still names one well-defined final state per object. For connectors (lines without ``resource``,
    as jobs have always been) one operation in 50 is a ``deltaSync``; other collections are described
    in :func:`_resource_line`.

    Raises:
        ValueError: there are no objects of ``resource``, or no change the sample knows how to make to it.
    """
    if resource != "exchangeConnectors":
        return _write_resource_job(core, path, ops, resource)
    pool = [(t, c) for t in core.world.tenants.values() for c in t.connectors.values()]
    if not pool:
        raise ValueError("the emulator has no connectors to write a job for")
    pool.sort(key=lambda tc: (list(core.world.tenants).index(tc[0].tenant_id), tc[1]["id"]))
    # Interleave tenants so the sample exercises fairness from the first line.
    by_tenant: dict[str, list[tuple[str, str, str]]] = {}
    for tenant, conn in pool:
        by_tenant.setdefault(tenant.alias, []).append((tenant.alias, conn["id"], tenant.domain))
    order: list[tuple[str, str, str]] = []
    while any(by_tenant.values()):
        for queue in by_tenant.values():
            if queue:
                order.append(queue.pop(0))
    with path.open("wb") as out:
        for n in range(ops):
            alias, object_id, domain = order[n % len(order)]
            line: dict[str, object] = {"tenant": alias, "id": object_id}
            if n % 50 == 49 and n < len(order):
                line.update({"action": "sync", "syncType": "deltaSync"})
            else:
                line["patch"] = {
                    "serverName": f"mail-migrated-{object_id[:8]}.{domain}",
                    "exchangeConnectorType": "serviceToService",
                    "primarySmtpAddress": f"connector-{object_id[:8]}@{domain}",
                }
            out.write(orjson.dumps(line) + b"\n")
    return ops


def _resource_line(resource: str, tenant: Tenant, obj: dict[str, Any]) -> dict[str, Any]:
    """One job line for an object of another collection than Exchange Connectors.

    Autopilot devices get a group tag (``updateDeviceProperties``); managed devices and every other collection
    whose type has a writable ``description`` or ``displayName`` get a patch of it (with the object's
    ``@odata.type`` when the collection's type is abstract).
    """
    oid = str(obj["id"])
    line: dict[str, Any] = {"tenant": tenant.alias, "resource": resource, "id": oid}
    if resource == "windowsAutopilotDeviceIdentities":
        return line | {"action": "updateDeviceProperties", "params": {"groupTag": f"Wave-{int(oid[:2], 16) % 4 + 1}"}}
    entity = registry.resource(resource).entity_type
    if resource == "managedDevices":
        return line | {"patch": {"notes": f"Audited by bulkconn ({oid[:8]})"}}
    name = next((n for n in ("description", "displayName") if n in entity.properties), None)
    if name is None or entity.properties[name].read_only:
        raise ValueError(f"the sample job cannot change {resource}: its type has no description or displayName")
    patch: dict[str, Any] = {name: f"Reviewed {tenant.domain.split('.')[0].capitalize()} {oid[:8]}"}
    if entity.abstract:
        patch = {"@odata.type": obj["@odata.type"]} | patch
    return line | {"patch": patch}


def _write_resource_job(core: EmulatorCore, path: Path, ops: int, resource: str) -> int:
    tenants = list(core.world.tenants.values())
    queues = [[(t, o) for o in t.objects.get(resource, {}).values()] for t in tenants]
    order = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    if not order:
        raise ValueError(f"the emulator has no {resource} to write a job for")
    with path.open("wb") as out:
        for n in range(ops):
            tenant, obj = order[n % len(order)]
            out.write(orjson.dumps(_resource_line(resource, tenant, obj)) + b"\n")
    return ops
