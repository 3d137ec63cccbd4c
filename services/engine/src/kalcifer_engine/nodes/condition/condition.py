"""`condition`: compare a value of the context and branch `true` or `false`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import object_schema

OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "not_in", "exists")
FIELD_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"


class Condition(NodeType):
    """Compares the context value at `field` (a dotted path) with `value` using `operator`."""

    key = "condition"
    category = NodeCategory.CONDITION
    description = "Compare a value of the context; branch 'true' or 'false'."
    config_schema = object_schema(
        description,
        {
            "field": {
                "type": "string",
                "pattern": FIELD_PATH_PATTERN,
                "description": "Dotted path into the context, e.g. 'customer.attributes.tier' or 'event.amount'.",
            },
            "operator": {"enum": list(OPERATORS)},
            "value": {"description": "What to compare with; an array for 'in' and 'not_in'; unused by 'exists'."},
        },
        required=["field", "operator"],
        allOf=[
            {
                "if": {"properties": {"operator": {"not": {"const": "exists"}}}, "required": ["operator"]},
                "then": {"required": ["value"]},
            },
            {
                "if": {"properties": {"operator": {"enum": ["in", "not_in"]}}, "required": ["operator"]},
                "then": {"properties": {"value": {"type": "array"}}},
            },
        ],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """`true` or `false`."""
        return ("true", "false")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.condition`."""
        return _b.condition(config, ctx)
