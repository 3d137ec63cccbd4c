"""`event_entry`: a participant enters when an event of a type (and matching a filter) is ingested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import expression_violations
from kalcifer_engine.nodes.schema import CEL_EXPRESSION, NON_EMPTY_STRING, object_schema


class EventEntry(NodeType):
    """Starts an instance for the event's participant when `event_type` matches and `filter` (CEL) holds."""

    key = "event_entry"
    category = NodeCategory.TRIGGER
    description = "Enter when an event of this type is ingested (optionally only when a CEL filter holds)."
    config_schema = object_schema(
        description,
        {
            "event_type": {**NON_EMPTY_STRING, "description": "The event type that starts the flow."},
            "filter": {**CEL_EXPRESSION, "description": "Optional CEL condition over `event`."},
        },
        required=["event_type"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The filter must compile."""
        return expression_violations(config, "filter")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.entered`."""
        return _b.entered(ctx)
