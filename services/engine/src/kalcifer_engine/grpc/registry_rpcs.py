"""EngineService RPCs of the node registry and graph validation (ValidateGraph, *NodeType*)."""

from __future__ import annotations

from kalcifer_engine.deps import EngineDeps


class RegistryRpcs:
    """ValidateGraph, ListNodeTypes, RegisterNodeType, DeleteNodeType."""

    deps: EngineDeps
