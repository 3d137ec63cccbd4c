"""The node registry: node type key -> node type (SPEC 6.1).

Built-ins load at start, plugins through the entry-point group `kalcifer.nodes`; a tenant's webhook types join
per request through `with_extra`, never shadowing a built-in.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points

from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.builtins import BUILTIN_NODE_TYPES
from kalcifer_engine.nodes.schema import schema_errors
from kalcifer_engine.nodes.webhook import WebhookNodeType

__all__ = ["ENTRY_POINT_GROUP", "NodeRegistry", "WebhookNodeType", "builtin_registry"]

ENTRY_POINT_GROUP = "kalcifer.nodes"


class NodeRegistry:
    """Node types by key. Registering a key twice is an error: a graph must mean one thing."""

    def __init__(self, nodes: Iterable[NodeType] = ()) -> None:
        self._nodes: dict[str, NodeType] = {}
        for node in nodes:
            self.register(node)

    def register(self, node: NodeType) -> None:
        """Add `node`; raises `ValueError` when its key is taken or its declaration is unusable."""
        key = getattr(node, "key", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"{type(node).__name__} declares no key")
        if key in self._nodes:
            raise ValueError(f"node type {key!r} is already registered ({type(self._nodes[key]).__name__})")
        if not isinstance(getattr(node, "category", None), NodeCategory):
            raise ValueError(f"node type {key!r} declares no NodeCategory")
        problems = schema_errors(getattr(node, "config_schema", None))
        if problems:
            raise ValueError(f"node type {key!r} has an invalid config_schema: {'; '.join(problems)}")
        self._nodes[key] = node

    def get(self, key: str) -> NodeType | None:
        """The node type registered under `key`, if any."""
        return self._nodes.get(key)

    def keys(self) -> list[str]:
        """Registered keys, in registration order."""
        return list(self._nodes)

    def all(self) -> list[NodeType]:
        """Registered node types, in registration order."""
        return list(self._nodes.values())

    def with_extra(self, nodes: Iterable[NodeType]) -> NodeRegistry:
        """A new registry with this one's types plus `nodes` (a tenant's own); `ValueError` if a key is taken."""
        extended = NodeRegistry(self._nodes.values())
        for node in nodes:
            extended.register(node)
        return extended

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)


def builtin_registry() -> NodeRegistry:
    """A registry of the 23 built-ins plus every plugin of the entry-point group `kalcifer.nodes`.

    A broken plugin fails the start (TypeError/ValueError naming it) rather than the first graph that uses it.
    """
    registry = NodeRegistry(node_type() for node_type in BUILTIN_NODE_TYPES)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        if not (isinstance(loaded, type) and issubclass(loaded, NodeType)):
            raise TypeError(f"entry point {entry_point.name!r} ({entry_point.value}) is not a NodeType subclass")
        registry.register(loaded())
    return registry
