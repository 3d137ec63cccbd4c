"""What the message-sending channel nodes share: a template, its data, and the channel they count against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, TEMPLATE_DATA, object_schema


def message_schema(description: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The config schema of a send node: `template_id` (required), `data`, plus the channel's own fields."""
    return object_schema(
        description,
        {
            "template_id": {**NON_EMPTY_STRING, "description": "The message template to render."},
            "data": TEMPLATE_DATA,
            **extra,
        },
        required=["template_id"],
    )


class ChannelSend(NodeType):
    """Base of the nodes that send a templated message on one channel (counted by `frequency_cap`)."""

    category = NodeCategory.ACTION
    # The channel name used by deliveries, preferences and frequency caps.
    channel: str

    @property
    def payload_fields(self) -> tuple[str, ...]:
        """The channel's own config fields (subject, title, ...) copied into the delivery's payload."""
        return tuple(name for name in self.config_schema["properties"] if name not in ("template_id", "data"))

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.send`."""
        return await _b.send(self.channel, config, ctx, self.payload_fields)
