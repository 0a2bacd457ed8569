"""Which ``/deviceManagement`` collection, object and action a Graph path names, and the methods each allows.

Every collection of the registry (``bulkconn.registry``, from Graph's v1.0 metadata) has the same routes:

- ``/deviceManagement/{collection}``: GET lists, POST creates;
- ``/deviceManagement/{collection}/{id}``: GET, PATCH, DELETE;
- ``/deviceManagement/{collection}/{id}/{action}``: POST calls an action bound to the object;
- ``/deviceManagement/{collection}/{action}``: POST calls an action bound to the collection.

Collection and action names match case-insensitively, and an action may be written with its namespace
(``microsoft.graph.sync``), as Graph allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from bulkconn import registry

_NAMESPACE = "microsoft.graph."


class Kind(StrEnum):
    """What a path names."""

    COLLECTION = "collection"
    ITEM = "item"
    ACTION = "action"  # bound to one object
    COLLECTION_ACTION = "collection_action"  # bound to the collection


_ALLOWED = {
    Kind.COLLECTION: ("GET", "POST"),
    Kind.ITEM: ("GET", "PATCH", "DELETE"),
    Kind.ACTION: ("POST",),
    Kind.COLLECTION_ACTION: ("POST",),
}


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved path: the collection's resource, and the object id and action name where the path has them."""

    kind: Kind
    resource: registry.Resource
    object_id: str = ""
    action: str = ""

    def allows(self, method: str) -> bool:
        """Whether ``method`` applies here; objects of collections without PATCH (per the registry) refuse PATCH."""
        if self.resource.no_patch and method == "PATCH" and self.kind is Kind.ITEM:
            return False
        return method in _ALLOWED[self.kind]


@cache
def _collections() -> dict[str, str]:
    return {name.lower(): name for name in registry.collections()}


def _action_name(resource: registry.Resource, segment: str, *, on_collection: bool) -> str | None:
    """The action ``segment`` names on ``resource`` (namespace optional), or ``None``."""
    wanted = segment.lower().removeprefix(_NAMESPACE)
    for action in resource.actions.values():
        if action.name.lower() == wanted and action.on_collection == on_collection:
            return action.name
    return None


def resolve(path: str, method: str) -> Route | None:
    """Map a path below the version segment to a route, or ``None`` when there is none.

    A POST to ``{collection}/{id}/{name}`` where ``name`` is no action of the collection still resolves (so
    the answer can name the actions that exist); any other method there does not.
    """
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2 or len(segments) > 4 or segments[0].lower() != "devicemanagement":
        return None
    name = _collections().get(segments[1].lower())
    if name is None:
        return None
    resource = registry.resource(name)
    if len(segments) == 2:
        return Route(Kind.COLLECTION, resource)
    if len(segments) == 3:
        action = _action_name(resource, segments[2], on_collection=True)
        if action is not None and method == "POST":
            return Route(Kind.COLLECTION_ACTION, resource, action=action)
        return Route(Kind.ITEM, resource, segments[2])
    action = _action_name(resource, segments[3], on_collection=False)
    if action is None and method != "POST":
        return None
    return Route(Kind.ACTION, resource, segments[2], action or segments[3].removeprefix(_NAMESPACE))
