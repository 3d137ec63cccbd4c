"""`wait_until`: park the path until a moment in time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import datetime_violations
from kalcifer_engine.nodes.schema import object_schema


class WaitUntil(NodeType):
    """Waits until `datetime` (with a UTC offset); a moment already past resumes at once."""

    key = "wait_until"
    category = NodeCategory.WAIT
    description = "Wait until a date and time (with a UTC offset)."
    resumable = True
    config_schema = object_schema(
        description,
        {
            "datetime": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 with an offset, e.g. '2030-01-31T09:00:00+01:00'.",
            }
        },
        required=["datetime"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The datetime must parse and carry an offset: a bare wall-clock time means different moments."""
        return datetime_violations(config, "datetime")

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.wait_until`."""
        return _b.wait_until(config, ctx)

    async def resume(self, config: _b.Config, ctx: _b.NodeContext, trigger: str, data: _b.Config) -> _b.NodeResult:
        """See `behaviour.resumed_timer`."""
        return _b.resumed_timer(trigger)
