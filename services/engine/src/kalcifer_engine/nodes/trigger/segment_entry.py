"""`segment_entry`: participants enter when they join a segment."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema


class SegmentEntry(NodeType):
    """Starts an instance for each participant that enters the segment `segment_id`."""

    key = "segment_entry"
    category = NodeCategory.TRIGGER
    description = "Enter when a participant joins a segment."
    config_schema = object_schema(
        description,
        {"segment_id": {**NON_EMPTY_STRING, "description": "The segment whose new members enter."}},
        required=["segment_id"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.entered`."""
        return _b.entered(ctx)
