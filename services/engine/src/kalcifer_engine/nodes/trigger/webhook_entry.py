"""`webhook_entry`: a participant enters when the tenant's inbound webhook path is called."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import object_schema

# Lower-case segments without empty parts, so "/orders//paid" and "Orders" cannot alias "orders/paid".
WEBHOOK_PATH_PATTERN = r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$"


class WebhookEntry(NodeType):
    """Starts an instance when a request arrives on the tenant's webhook `webhook_path`."""

    key = "webhook_entry"
    category = NodeCategory.TRIGGER
    description = "Enter when the tenant's inbound webhook at this path is called."
    config_schema = object_schema(
        description,
        {
            "webhook_path": {
                "type": "string",
                "pattern": WEBHOOK_PATH_PATTERN,
                "maxLength": 200,
                "description": "Path under the tenant's webhook root, e.g. 'orders/paid'.",
            }
        },
        required=["webhook_path"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.entered`."""
        return _b.entered(ctx)
