"""Node types: the contract (`base`), the registry, the 23 built-ins by category, and tenants' webhook types."""

from kalcifer_engine.nodes.base import (
    Branched,
    Completed,
    Failed,
    NodeCategory,
    NodeResult,
    NodeType,
    Waiting,
)
from kalcifer_engine.nodes.registry import NodeRegistry, builtin_registry
from kalcifer_engine.nodes.webhook import WebhookNodeType

__all__ = [
    "Branched",
    "Completed",
    "Failed",
    "NodeCategory",
    "NodeRegistry",
    "NodeResult",
    "NodeType",
    "Waiting",
    "WebhookNodeType",
    "builtin_registry",
]
