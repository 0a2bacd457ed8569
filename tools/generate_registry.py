"""Generate bulkconn's resource registry from Microsoft Graph's published v1.0 metadata (CSDL).

Usage (from anywhere; rerun whenever the metadata or the override list changes)::

    python tools/generate_registry.py [--metadata PATH/TO/cleanMetadata.xml[.gz]]

The metadata is Microsoft Graph's "clean" v1.0 CSDL, published under the MIT licence in the public
repository microsoftgraph/msgraph-metadata (``clean_v10_metadata/cleanMetadata.xml``). A copy is
committed, gzip-compressed, in ``tools/graph-metadata/`` (with its licence and source commit) and is the
default input; ``--license`` defaults to ``LICENSE`` beside the metadata.

It writes three files, all deterministic (same inputs, same bytes):

- ``bulkconn/registry_data.json``: every collection-valued, contained navigation property of the
  ``deviceManagement`` singleton, the entity types behind them (whole inheritance chain, properties
  flattened from the base types), the complex and enum types they use, and the actions bound to
  those entity types (to one object or to the whole collection).
- ``bulkconn/registry_data.LICENSE``: the metadata's MIT notice, which must travel with the data.
- ``docs/resources.md``: the table of supported collections and actions.

Properties no client may set, and the actions that are idempotent or undoable, come from
``tools/registry_overrides.toml`` (the clean metadata has no read-only or capability annotations); a name there
that is not in the metadata stops the generator.

Only the standard library is used, so the generator runs before bulkconn is installed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
GRAPH = "microsoft.graph."
FORMAT_VERSION = 1
SINGLETON = "deviceManagement"
METADATA = ROOT / "tools" / "graph-metadata" / "v1.0-cleanMetadata.xml.gz"


@dataclass
class Structured:
    """An entity or complex type as declared (own properties only)."""

    name: str
    base: str | None
    abstract: bool
    open: bool
    entity: bool
    properties: list[list[Any]] = field(default_factory=list)  # [name, type, nullable]
    navigation: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@dataclass
class Metadata:
    """What the generator needs from the CSDL, with every type name fully qualified."""

    types: dict[str, Structured] = field(default_factory=dict)
    enums: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)


def _qualify(type_name: str, aliases: dict[str, str]) -> str:
    """``graph.x`` -> ``microsoft.graph.x``; ``Collection(...)`` keeps its wrapper."""
    if type_name.startswith("Collection(") and type_name.endswith(")"):
        return f"Collection({_qualify(type_name[11:-1], aliases)})"
    namespace, _, name = type_name.rpartition(".")
    return f"{aliases.get(namespace, namespace)}.{name}"


def short(type_name: str) -> str:
    """The registry's spelling: ``microsoft.graph.x`` -> ``x``; other namespaces stay qualified."""
    if type_name.startswith("Collection("):
        return f"Collection({short(type_name[11:-1])})"
    if type_name.startswith(GRAPH) and "." not in type_name[len(GRAPH) :]:
        return type_name[len(GRAPH) :]
    return type_name


def element_type(type_name: str) -> str:
    """The element type of ``Collection(x)``, or the type itself."""
    return type_name[11:-1] if type_name.startswith("Collection(") else type_name


def _structured(node: ET.Element, namespace: str, aliases: dict[str, str], entity: bool) -> Structured:
    base = node.get("BaseType")
    item = Structured(
        name=f"{namespace}.{node.get('Name')}",
        base=_qualify(base, aliases) if base else None,
        abstract=node.get("Abstract") == "true",
        open=node.get("OpenType") == "true",
        entity=entity,
    )
    for child in node:
        if child.tag == f"{EDM}Property":
            nullable = child.get("Nullable") != "false"
            item.properties.append([child.get("Name"), _qualify(child.get("Type", ""), aliases), nullable])
        elif child.tag == f"{EDM}NavigationProperty":
            item.navigation.append(child.get("Name", ""))
        elif child.tag == f"{EDM}Key":
            item.keys = [ref.get("Name", "") for ref in child]
    return item


def _action(node: ET.Element, aliases: dict[str, str]) -> dict[str, Any] | None:
    if node.get("IsBound") != "true":
        return None
    params = [p for p in node if p.tag == f"{EDM}Parameter"]
    binding = _qualify(params[0].get("Type", ""), aliases)
    returns = node.find(f"{EDM}ReturnType")
    return {
        "name": node.get("Name"),
        "binding": element_type(binding),
        "collection": binding.startswith("Collection("),
        "params": [
            [p.get("Name"), _qualify(p.get("Type", ""), aliases), p.get("Nullable") != "false"] for p in params[1:]
        ],
        "returns": _qualify(returns.get("Type", ""), aliases) if returns is not None else None,
    }


def load(path: Path) -> ET.Element:
    """The CSDL's root element; ``.gz`` files are decompressed on the fly."""
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as stream:
        # A published metadata file chosen by the maintainer, not untrusted input.
        return ET.parse(stream).getroot()  # noqa: S314


def parse(root: ET.Element) -> Metadata:
    """Read the CSDL into a :class:`Metadata` (stdlib ElementTree)."""
    schemas = list(root.iter(f"{EDM}Schema"))
    aliases = {s.get("Alias", ""): s.get("Namespace", "") for s in schemas if s.get("Alias")}
    meta = Metadata()
    for schema in schemas:
        namespace = schema.get("Namespace", "")
        for node in schema:
            if node.tag in (f"{EDM}EntityType", f"{EDM}ComplexType"):
                item = _structured(node, namespace, aliases, node.tag == f"{EDM}EntityType")
                meta.types[item.name] = item
            elif node.tag == f"{EDM}EnumType":
                members = [m.get("Name", "") for m in node if m.tag == f"{EDM}Member"]
                meta.enums[f"{namespace}.{node.get('Name')}"] = {
                    "members": members,
                    "flags": node.get("IsFlags") == "true",
                }
            elif node.tag == f"{EDM}Action":
                action = _action(node, aliases)
                if action is not None:
                    meta.actions.append(action)
    return meta


def _singleton_type(root: ET.Element) -> str:
    for node in root.iter(f"{EDM}Singleton"):
        if node.get("Name") == SINGLETON:
            return node.get("Type", "")
    raise SystemExit(f"no '{SINGLETON}' singleton in the metadata")


def collections_of(root: ET.Element) -> dict[str, str]:
    """Collection-valued, contained navigation properties of the singleton: name -> element type."""
    singleton = _singleton_type(root)
    namespace, _, name = singleton.rpartition(".")
    for schema in root.iter(f"{EDM}Schema"):
        if schema.get("Namespace") != namespace:
            continue
        aliases = {schema.get("Alias", ""): namespace}
        for node in schema.iter(f"{EDM}EntityType"):
            if node.get("Name") != name:
                continue
            found = {}
            for nav in node.iter(f"{EDM}NavigationProperty"):
                nav_type = nav.get("Type", "")
                if nav.get("ContainsTarget") == "true" and nav_type.startswith("Collection("):
                    found[nav.get("Name", "")] = element_type(_qualify(nav_type, aliases))
            return dict(sorted(found.items()))
    raise SystemExit(f"entity type {singleton} not found")


class Closure:
    """Walks from the collections' entity types to every type they reach."""

    def __init__(self, meta: Metadata) -> None:
        self.meta = meta
        self.children: dict[str, list[str]] = {}
        for item in meta.types.values():
            if item.base:
                self.children.setdefault(item.base, []).append(item.name)

    def ancestors(self, name: str) -> Iterator[str]:
        base = self.meta.types[name].base
        while base:
            yield base
            base = self.meta.types[base].base

    def descendants(self, name: str) -> list[str]:
        found: list[str] = []
        stack = list(self.children.get(name, []))
        while stack:
            child = stack.pop()
            found.append(child)
            stack.extend(self.children.get(child, []))
        return sorted(found)

    def properties(self, name: str) -> list[list[Any]]:
        chain = [*reversed(list(self.ancestors(name))), name]
        return [prop for link in chain for prop in self.meta.types[link].properties]

    def reach(self, roots: Iterable[str], actions: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        """Structured types and enums reachable from ``roots`` (with descendants) and the actions' parameters."""
        structured: set[str] = set()
        enums: set[str] = set()
        stack = list(roots) + [element_type(p[1]) for a in actions for p in a["params"]]
        while stack:
            name = stack.pop()
            if name in self.meta.enums:
                enums.add(name)
            elif name in self.meta.types and name not in structured:
                structured.add(name)
                stack.extend(self.descendants(name))
                stack.extend(element_type(p[1]) for p in self.properties(name))
        return structured, enums


def _overrides(path: Path, meta: Metadata, closure: Closure, collections: dict[str, str]) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    for type_name, props in data.get("types", {}).items():
        full = GRAPH + type_name
        if full not in meta.types:
            raise SystemExit(f"{path}: type '{type_name}' is not in the metadata")
        known = {p[0] for p in closure.properties(full)}
        for prop in props:
            if prop not in known:
                raise SystemExit(f"{path}: '{type_name}' has no property '{prop}'")
    for name in data.get("collections", {}):
        if name not in collections:
            raise SystemExit(f"{path}: '{name}' is not a /{SINGLETON} collection")
    for binding, names in data.get("actions", {}).items():
        for name, flags in names.items():
            _check_action_flags(path, meta, closure, binding, name, flags)
    return data


def _check_action_flags(path: Path, meta: Metadata, closure: Closure, binding: str, name: str, flags: Any) -> None:
    """An ``[actions.TYPE.NAME]`` entry names a bound action, and an undoable one only sets same-named properties."""
    found = [a for a in meta.actions if a["binding"] == GRAPH + binding and a["name"] == name]
    if not found:
        raise SystemExit(f"{path}: '{binding}' has no bound action '{name}'")
    if not isinstance(flags, dict) or set(flags) - {"idempotent", "undoable"}:
        raise SystemExit(f"{path}: [actions.{binding}.{name}] takes only 'idempotent' and 'undoable'")
    if flags.get("undoable"):
        known = {p[0] for p in closure.properties(GRAPH + binding)}
        missing = [p[0] for a in found for p in a["params"] if p[0] not in known]
        if missing or not flags.get("idempotent"):
            raise SystemExit(
                f"{path}: '{name}' cannot be undoable: it must be idempotent and every parameter a property "
                f"of '{binding}' (not: {', '.join(missing) or 'idempotent'})"
            )


def _read_only(name: str, closure: Closure, overrides: dict[str, Any]) -> dict[str, str]:
    """Reasons for the properties no client may set, inherited along the base chain."""
    everywhere: dict[str, str] = overrides.get("everywhere", {})
    chain = [*reversed(list(closure.ancestors(name))), name]
    # The CSDL's own <Key> first: a key never changes, whatever the override list says.
    reasons = {
        key: everywhere.get(key, "is the object's key") for link in chain for key in closure.meta.types[link].keys
    }
    own_names = {p[0] for p in closure.properties(name)}
    reasons.update((prop, reason) for prop, reason in everywhere.items() if prop in own_names and prop not in reasons)
    for link in chain:
        reasons.update(overrides.get("types", {}).get(short(link), {}))
    return dict(sorted(reasons.items()))


def _props(props: list[list[Any]]) -> list[list[Any]]:
    return [[name, short(type_name), 1 if nullable else 0] for name, type_name, nullable in props]


def build(meta: Metadata, collections: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The registry as plain JSON-ready data (sorted, so the output is byte-for-byte stable)."""
    closure = Closure(meta)
    entity_roots = set(collections.values())
    family = {t for root in entity_roots for t in [root, *closure.ancestors(root), *closure.descendants(root)]}
    actions = [a for a in meta.actions if a["binding"] in family]
    structured, enums = closure.reach(entity_roots, actions)
    types = {}
    for name in sorted(structured):
        item = meta.types[name]
        entry: dict[str, Any] = {
            "entity": 1 if item.entity else 0,
            "props": _props(closure.properties(name)),
            "concrete": [short(n) for n in [name, *closure.descendants(name)] if not meta.types[n].abstract],
        }
        if item.abstract:
            entry["abstract"] = 1
        if item.open:
            entry["open"] = 1
        if item.base:
            entry["base"] = short(item.base)
        if item.entity:
            chain = [*reversed(list(closure.ancestors(name))), name]
            entry["nav"] = sorted({n for link in chain for n in meta.types[link].navigation})
            entry["readOnly"] = _read_only(name, closure, overrides)
        types[short(name)] = entry
    no_patch = overrides.get("collections", {})
    return {
        "format": FORMAT_VERSION,
        "collections": {
            name: {"type": short(t), **({"noPatch": no_patch[name]["no_patch"]} if name in no_patch else {})}
            for name, t in collections.items()
        },
        "types": types,
        "enums": {short(n): meta.enums[n] for n in sorted(enums)},
        "actions": sorted(
            (
                {
                    **a,
                    "binding": short(a["binding"]),
                    "params": _props(a["params"]),
                    "returns": _short_or_none(a),
                    **_action_flags(overrides, short(a["binding"]), a["name"]),
                }
                for a in actions
            ),
            key=lambda a: (a["binding"], a["name"], a["collection"]),
        ),
    }


def _action_flags(overrides: dict[str, Any], binding: str, name: str) -> dict[str, int]:
    """``idempotent``/``undoable`` as 1 where the override list says so (absent: neither)."""
    flags = overrides.get("actions", {}).get(binding, {}).get(name, {})
    return {flag: 1 for flag in ("idempotent", "undoable") if flags.get(flag)}


def _short_or_none(action: dict[str, Any]) -> str | None:
    returns = action["returns"]
    return short(returns) if returns else None


def _actions_for(registry: dict[str, Any], entity_type: str) -> list[str]:
    family = {entity_type, *registry["types"][entity_type]["concrete"]}
    base = registry["types"][entity_type].get("base")
    while base:
        family.add(base)
        base = registry["types"].get(base, {}).get("base")
    labels = set()
    for action in registry["actions"]:
        if action["binding"] in family:
            marks = [m for m in ("collection", "idempotent", "undoable") if action.get(m)]
            labels.add(f"`{action['name']}`" + (f" ({', '.join(marks)})" if marks else ""))
    return sorted(labels)


DOC_HEAD = """# Resources: every Intune `/deviceManagement` collection

<!-- Generated by tools/generate_registry.py from Microsoft Graph's v1.0 metadata; do not edit by hand. -->

bulkconn knows every collection under Graph's `/deviceManagement` from Microsoft Graph's own published v1.0
metadata (the OData CSDL in the public repository microsoftgraph/msgraph-metadata, MIT licence; the notice ships as
`bulkconn/registry_data.LICENSE`). A copy of that metadata is committed in `tools/graph-metadata/` with its source
commit; `python tools/generate_registry.py` turns it into `bulkconn/registry_data.json` and this page, byte for byte
the same on every run (a test checks it), and `bulkconn/registry.py` validates changes against it before anything is
sent. The data is read on first use, not when bulkconn starts (`python benchmarks/registry_load.py` measures both).

## How validation works

- **Collections** are named as in the URL (`windowsAutopilotDeviceIdentities`); an unknown name gets a "did you mean".
- **Types**: a collection's entity type may be *abstract* (for example `deviceConfiguration`): then a patch must say
  which concrete type the object is with `@odata.type` (e.g. `#microsoft.graph.windows10GeneralConfiguration`), and it
  is validated against that type's properties. Any concrete type in the inheritance chain is accepted.
- **Properties** are checked by type: text (`Edm.String`), whole numbers with their range (`Int32`, `Int64`, `Int16`,
  `Byte`), numbers (`Double`, `Single`, `Decimal`), true/false, dates and times with an offset (ISO 8601), dates,
  times of day, durations, GUIDs, base64 bytes, enums (by member name; flag enums accept `a,b`), nested objects
  (complex types, recursively, including their own `@odata.type`), and lists of any of these. `null` is accepted only
  where the metadata says the property is nullable. Each problem names the property path (`settings.mode`,
  `ruleList[2].name`) and suggests a near name when there is one.
- **Actions** bound to a type or to its collection are validated the same way: parameter names, types and nullability.
- **Relationships** (navigation properties) and read-only properties are refused in a patch, with the reason.

## The override list

The clean metadata does not mark anything read-only, so `tools/registry_overrides.toml` lists, with the Microsoft Learn
page each comes from: keys and the service's timestamps everywhere (`id`, `createdDateTime`, `lastModifiedDateTime`),
the service-owned `version` of configuration and compliance policies, the properties the managedDevice page lists as
read-only, and collections that have no update method at all (Autopilot device identities are changed with the
`updateDeviceProperties` action). The Exchange Connector keeps exactly the Exchange Connector update page's updatable properties.
The generator refuses an override that names something the metadata does not have.

## Actions: retries, resume and rollback

An action is treated as **not idempotent** unless the override list says otherwise: when its answer goes missing
(a timeout, a 5xx) bulkconn does not send it again, the operation ends `uncertain`, and a resume does not resend it
unless asked to (`--resend-uncertain`), as for the Exchange Connector `sync`. Only actions that set values named by
their parameters are marked *idempotent* (retried like a PATCH). An action marked *undoable* is one whose every
parameter is a property of the object with the same name, so the pre-image of those properties, sent to the same
action, restores the object; rollback refuses every other action (`bulkconn.registry.Action.undoable`). A 429 is
retried for every action: the service refused it before doing anything.

## Job lines

A job line names its collection with `"resource"` (omitted, or the historical `exchangeConnector`: Exchange
Connectors) and either patches the object or calls one of its actions with `"action"` and `"params"`; abstract
collections need `"@odata.type"`. `docs/job-format.md` has the fields and the CSV columns.

## Supported collections

*Concrete types* counts the kinds an object of the collection can be (`@odata.type`). *PATCH* says "no" only where the
override list says so: the clean metadata has no capability annotations, so it cannot tell which collections the
service refuses to update (reports and analytics collections, such as `auditEvents` or `userExperienceAnalytics*`, are
written by Intune itself and a real tenant is expected to refuse changes to them). *Actions* are bound to one object,
or to the whole collection where marked; *idempotent* and *undoable* are explained above.

"""


def render_doc(registry: dict[str, Any]) -> str:
    """``docs/resources.md``: the fixed explanation, then one table row per collection."""
    rows = [
        "| collection | entity type | concrete types | PATCH | actions |",
        "|---|---|---|---|---|",
    ]
    for name, entry in registry["collections"].items():
        entity = registry["types"][entry["type"]]
        kind = f"`{entry['type']}`" + (" (abstract)" if entity.get("abstract") else "")
        patch = "no, see actions" if "noPatch" in entry else "not refused"
        actions = ", ".join(_actions_for(registry, entry["type"])) or "none"
        rows.append(f"| `{name}` | {kind} | {len(entity['concrete'])} | {patch} | {actions} |")
    total = len(registry["actions"])
    tail = f"\n{len(registry['collections'])} collections, {total} bound actions.\n"
    return DOC_HEAD + "\n".join(rows) + "\n" + tail


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, and write the three files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, default=METADATA, help="Graph v1.0 clean CSDL (.xml or .xml.gz)")
    parser.add_argument("--license", type=Path, help="its MIT licence (default: LICENSE beside the metadata)")
    parser.add_argument("--overrides", type=Path, default=ROOT / "tools" / "registry_overrides.toml")
    parser.add_argument("--out", type=Path, default=ROOT, help="repository root to write into")
    args = parser.parse_args(argv)
    license_path = args.license or args.metadata.parent / "LICENSE"
    root = load(args.metadata)
    meta = parse(root)
    collections = collections_of(root)
    closure = Closure(meta)
    registry = build(meta, collections, _overrides(args.overrides, meta, closure, collections))
    for folder in ("bulkconn", "docs"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    data = json.dumps(registry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    (args.out / "bulkconn" / "registry_data.json").write_text(data, encoding="utf-8")
    notice = (
        "bulkconn/registry_data.json is generated from Microsoft Graph's v1.0 metadata\n"
        "(github.com/microsoftgraph/msgraph-metadata, clean_v10_metadata/cleanMetadata.xml), under this licence:\n\n"
        + license_path.read_text(encoding="utf-8")
    )
    (args.out / "bulkconn" / "registry_data.LICENSE").write_text(notice, encoding="utf-8")
    (args.out / "docs" / "resources.md").write_text(render_doc(registry), encoding="utf-8")
    print(
        f"{len(registry['collections'])} collections, {len(registry['types'])} types, {len(registry['actions'])} actions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
