"""`check_segment`: branch on segment membership."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema


class CheckSegment(NodeType):
    """Branches `true` when the participant is in segment `segment_id`, else `false`."""

    key = "check_segment"
    category = NodeCategory.CONDITION
    description = "Branch 'true' when the participant is in a segment, else 'false'."
    config_schema = object_schema(
        description,
        {"segment_id": {**NON_EMPTY_STRING, "description": "The segment to check."}},
        required=["segment_id"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """`true` or `false`."""
        return ("true", "false")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.check_segment`."""
        return await _b.check_segment(config, ctx)
