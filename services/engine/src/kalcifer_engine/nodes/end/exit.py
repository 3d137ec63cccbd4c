"""`exit`: end the instance (COMPLETED, SPEC 6.3: reaching an end node is the normal end)."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import object_schema


class Exit(NodeType):
    """Ends the instance at once as COMPLETED, cancelling its other paths; `reason` goes into the step's output."""

    key = "exit"
    category = NodeCategory.END
    description = "End the instance (its other paths and waits are cancelled)."
    config_schema = object_schema(
        description,
        {"reason": {"type": "string", "maxLength": 200, "description": "Why the instance ended, for operators."}},
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.ended`."""
        return _b.ended(config)
