"""`preference_gate`: branch on whether the participant accepts messages on a channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import CHANNEL, object_schema


class PreferenceGate(NodeType):
    """Branches `true` when the participant has not opted out of `channel`, else `false`."""

    key = "preference_gate"
    category = NodeCategory.CONDITION
    description = "Branch 'true' when the participant accepts messages on a channel, else 'false'."
    config_schema = object_schema(
        description,
        {"channel": {**CHANNEL, "description": "The channel whose preference is checked."}},
        required=["channel"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """`true` or `false`."""
        return ("true", "false")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.preference_gate`."""
        return await _b.preference_gate(config, ctx)
