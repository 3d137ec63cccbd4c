"""`update_profile`: set attributes on the participant's profile."""

from __future__ import annotations

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import object_schema


class UpdateProfile(NodeType):
    """Merges `fields` into the customer profile's attributes (a null value removes the attribute)."""

    key = "update_profile"
    category = NodeCategory.ACTION
    description = "Set attributes on the participant's profile; null removes one."
    config_schema = object_schema(
        description,
        {
            "fields": {
                "type": "object",
                "minProperties": 1,
                # Attribute names are addressed as dotted paths (`customer.attributes.tier`), so no dots in them.
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "description": "Attribute name -> new value.",
            }
        },
        required=["fields"],
    )

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.update_profile`."""
        return await _b.update_profile(config, ctx)
