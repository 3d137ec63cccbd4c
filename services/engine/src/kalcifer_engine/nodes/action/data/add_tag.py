"""`add_tag`: tag the participant."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema


class AddTag(NodeType):
    """Adds `tag` to the participant's profile tags (adding a tag twice is a no-op)."""

    key = "add_tag"
    category = NodeCategory.ACTION
    description = "Add a tag to the participant's profile."
    config_schema = object_schema(
        description,
        {"tag": {**NON_EMPTY_STRING, "maxLength": 100, "description": "The tag to add."}},
        required=["tag"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.add_tag`."""
        return await _b.add_tag(config, ctx)
