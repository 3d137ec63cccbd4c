"""`track_conversion`: record a conversion (and its revenue) for analytics."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema


class TrackConversion(NodeType):
    """Records the conversion `event_name` for the participant, with optional `revenue` in `currency`."""

    key = "track_conversion"
    category = NodeCategory.ACTION
    description = "Record a conversion, optionally with revenue, for analytics."
    config_schema = object_schema(
        description,
        {
            "event_name": {**NON_EMPTY_STRING, "description": "The conversion's name, e.g. 'purchase'."},
            "revenue": {"type": "number", "minimum": 0, "description": "Revenue attributed to the conversion."},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code, e.g. 'EUR'."},
        },
        required=["event_name"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.track_conversion`."""
        return await _b.track_conversion(config, ctx)
