"""`call_webhook`: call an HTTP(S) endpoint of the tenant's."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from kalcifer_common.durations import is_duration, parse_duration
from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import duration_violations
from kalcifer_engine.nodes.schema import DURATION, object_schema

# A run holds its instance's row while it calls out; a slow endpoint must not hold it for long.
MAX_TIMEOUT = timedelta(seconds=30)


class CallWebhook(NodeType):
    """Sends a request to `url`; the response body becomes the node's output. Retried on failure."""

    key = "call_webhook"
    category = NodeCategory.ACTION
    description = "Call an HTTP(S) endpoint; its JSON response becomes the node's output."
    # Endpoints blip; a few retries with backoff beat failing the instance on the first 503.
    retries = 3
    config_schema = object_schema(
        description,
        {
            "url": {
                "type": "string",
                "format": "uri",
                "pattern": r"^https?://[^\s/?#]+([/?#]\S*)?$",
                "description": "The endpoint, http:// or https://.",
            },
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "description": "Defaults to POST."},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Extra request headers.",
            },
            "body": {"description": "The JSON body; defaults to the instance context."},
            "timeout": {**DURATION, "description": "How long to wait for a response; defaults to 10s, at most 30s."},
        },
        required=["url"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The timeout must be a duration of at most `MAX_TIMEOUT`."""
        found = duration_violations(config, "timeout")
        timeout = config.get("timeout")
        if isinstance(timeout, str) and is_duration(timeout) and parse_duration(timeout) > MAX_TIMEOUT:
            found.append(FieldViolation("timeout", f"{timeout!r} is longer than the maximum of 30s"))
        return found

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.call_webhook`."""
        return await _b.call_webhook(config, ctx)
