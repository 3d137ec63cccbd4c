"""`condition`: compare a value of the context and branch `true` or `false`.

The comparison is `kalcifer_common.comparisons` (the one segment rules use): values compare by JSON type
(`true` is not `1`, `1` is `1.0`), gt/gte/lt/lte order only two numbers or two strings, a path that does not
resolve fails every operator but `neq` and `not_in`, and a list index is a path step (`event.items.0.sku`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.comparisons import OPERATORS

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import object_schema

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
                "description": (
                    "Dotted path into the context, e.g. 'customer.attributes.tier', 'event.amount' or "
                    "'event.items.0.sku' (a number picks a list item, from 0)."
                ),
            },
            "operator": {"enum": list(OPERATORS)},
            "value": {
                "description": (
                    "What to compare with, by JSON type (true is not 1); an array for 'in' and 'not_in'; "
                    "unused by 'exists'."
                )
            },
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
