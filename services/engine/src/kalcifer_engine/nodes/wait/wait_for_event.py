"""`wait_for_event`: park the path until an event arrives, or give up after a timeout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import duration_violations, expression_violations
from kalcifer_engine.nodes.schema import CEL_EXPRESSION, DURATION, NON_EMPTY_STRING, object_schema

EVENT_RECEIVED = "event_received"
TIMED_OUT = "timed_out"


class WaitForEvent(NodeType):
    """Waits for the participant's event `event_type` (matching `filter`); takes `timed_out` after `timeout`."""

    key = "wait_for_event"
    category = NodeCategory.WAIT
    description = "Wait for an event of the participant's; give up after a timeout."
    resumable = True
    config_schema = object_schema(
        description,
        {
            "event_type": {**NON_EMPTY_STRING, "description": "The event type to wait for."},
            "timeout": {**DURATION, "description": "How long to wait before taking the 'timed_out' branch."},
            "filter": {**CEL_EXPRESSION, "description": "Optional CEL condition over `event` and the context."},
        },
        required=["event_type", "timeout"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """`event_received` or `timed_out`."""
        return (EVENT_RECEIVED, TIMED_OUT)

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The timeout must parse and the filter compile."""
        return duration_violations(config, "timeout") + expression_violations(config, "filter")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.wait_for_event`."""
        return _b.wait_for_event(config, ctx)

    async def resume(self, config: _b.Config, ctx: _b.NodeContext, trigger: str, data: _b.Config) -> _b.NodeResult:
        """See `behaviour.resumed_event`."""
        return _b.resumed_event(trigger, data)
