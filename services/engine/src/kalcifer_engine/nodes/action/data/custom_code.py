"""`custom_code`: compute a value with a CEL expression over the context (never Python `eval`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import expression_violations
from kalcifer_engine.nodes.schema import CEL_EXPRESSION, object_schema


class CustomCode(NodeType):
    """Evaluates `expression` (CEL) over the context and stores the value under `output` in the node's result."""

    key = "custom_code"
    category = NodeCategory.ACTION
    description = "Evaluate a CEL expression over the context and store its value."
    config_schema = object_schema(
        description,
        {
            "expression": {**CEL_EXPRESSION, "description": "The CEL expression to evaluate."},
            "output": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "Name of the result in the node's output; defaults to 'result'.",
            },
        },
        required=["expression"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The expression must compile."""
        return expression_violations(config, "expression")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.custom_code`."""
        return await _b.custom_code(config, ctx)
