"""`ab_split`: send each participant down one weighted variant, the same one every time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema, quote


class AbSplit(NodeType):
    """Branches to one of `variants` by weight; sticky per participant and flow. Its branches are the variant keys."""

    key = "ab_split"
    category = NodeCategory.CONDITION
    description = "Split participants between weighted variants; a participant always gets the same variant."
    branches_depend_on_config = True
    config_schema = object_schema(
        description,
        {
            "variants": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {**NON_EMPTY_STRING, "description": "The variant's branch key, e.g. 'a'."},
                        "weight": {"type": "number", "exclusiveMinimum": 0, "description": "Relative weight."},
                    },
                    "required": ["key", "weight"],
                    "additionalProperties": False,
                },
            }
        },
        required=["variants"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The variant keys, in order, each once (whatever else is wrong with the config)."""
        variants = config.get("variants")
        if not isinstance(variants, list):
            return ()
        keys = (v.get("key") for v in variants if isinstance(v, Mapping))
        return tuple(dict.fromkeys(k for k in keys if isinstance(k, str) and k))

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """Variant keys must be unique: two variants with one key would be one branch with two weights."""
        variants = config.get("variants")
        if not isinstance(variants, list):
            return []
        first_index: dict[str, int] = {}
        found: list[FieldViolation] = []
        for index, variant in enumerate(variants):
            key = variant.get("key") if isinstance(variant, Mapping) else None
            if not isinstance(key, str):
                continue
            if key in first_index:
                found.append(
                    FieldViolation(
                        f"variants[{index}].key",
                        f"duplicate variant key {quote(key)} (also variants[{first_index[key]}].key)",
                    )
                )
            else:
                first_index[key] = index
        return found

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.ab_split`."""
        return await _b.ab_split(config, ctx)
