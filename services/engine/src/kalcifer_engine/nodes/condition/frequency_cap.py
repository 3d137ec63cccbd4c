"""`frequency_cap`: stop over-messaging a participant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import duration_violations
from kalcifer_engine.nodes.schema import CHANNELS, DURATION, object_schema


class FrequencyCap(NodeType):
    """Branches `capped` when the participant got `max_messages` on `channel` within `time_window`, else `allowed`.

    Counted per tenant and participant, across flows.
    """

    key = "frequency_cap"
    category = NodeCategory.CONDITION
    description = "Branch 'capped' when the participant already got enough messages recently, else 'allowed'."
    config_schema = object_schema(
        description,
        {
            "max_messages": {"type": "integer", "minimum": 1, "description": "Messages allowed in the window."},
            "time_window": {**DURATION, "description": "The sliding window, e.g. '1d' or '1w'."},
            "channel": {"enum": [*CHANNELS, "any"], "description": "The channel counted; 'any' counts all."},
        },
        required=["max_messages", "time_window", "channel"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """`allowed` or `capped`."""
        return ("allowed", "capped")

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The window must be a duration."""
        return duration_violations(config, "time_window")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.frequency_cap`."""
        return await _b.frequency_cap(config, ctx)
