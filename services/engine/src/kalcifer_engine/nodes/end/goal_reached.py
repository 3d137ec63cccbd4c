"""`goal_reached`: end the instance as a success."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema


class GoalReached(NodeType):
    """Records that the participant reached `goal_name` and ends the instance."""

    key = "goal_reached"
    category = NodeCategory.END
    description = "Record that the participant reached a goal and end the instance."
    config_schema = object_schema(
        description,
        {"goal_name": {**NON_EMPTY_STRING, "description": "The goal reached, for analytics."}},
        required=["goal_name"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.goal_reached`."""
        return await _b.goal_reached(config, ctx)
