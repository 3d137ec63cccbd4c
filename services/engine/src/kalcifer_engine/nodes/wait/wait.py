"""`wait`: park the path for a duration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import duration_violations
from kalcifer_engine.nodes.schema import DURATION, object_schema


class Wait(NodeType):
    """Waits `duration` (e.g. '1.5h') from the moment the path reaches the node."""

    key = "wait"
    category = NodeCategory.WAIT
    description = "Wait for a duration."
    resumable = True
    config_schema = object_schema(
        description,
        {"duration": {**DURATION, "description": "How long to wait, e.g. '30m', '1.5h', '3d'."}},
        required=["duration"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The duration must parse."""
        return duration_violations(config, "duration")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.wait`."""
        return _b.wait(config, ctx)

    async def resume(self, config: _b.Config, ctx: _b.NodeContext, trigger: str, data: _b.Config) -> _b.NodeResult:
        """See `behaviour.resumed_timer`."""
        return _b.resumed_timer(trigger)
