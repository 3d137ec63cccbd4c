"""`call_webhook`: call an HTTP(S) endpoint of the tenant's, out of the run (SPEC 6.10)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from kalcifer_common.durations import is_duration, parse_duration
from kalcifer_common.errors import FieldViolation
from kalcifer_common.outbound import MAX_DEADLINE_SECONDS

from kalcifer_engine.nodes import behaviour as _b
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.checks import duration_violations
from kalcifer_engine.nodes.schema import DURATION, object_schema

# The total deadline of the call, every attempt included: the path waits no longer than this for its answer.
MAX_TIMEOUT = timedelta(seconds=MAX_DEADLINE_SECONDS)


class CallWebhook(NodeType):
    """Parks on a call to `url` that the scheduler makes (retrying with backoff under one `Idempotency-Key`);
    the JSON answer becomes the node's output and `accumulated.<node_id>`."""

    key = "call_webhook"
    category = NodeCategory.ACTION
    description = "Call an HTTP(S) endpoint; its JSON response becomes the node's output."
    resumable = True
    config_schema = object_schema(
        description,
        {
            "url": {
                "type": "string",
                "maxLength": 2048,
                # A literal http(s) URL, or one with templates (checked again once they are filled in).
                "pattern": r"^(https?://[^\s/?#]+([/?#]\S*)?|(https?://|\{\{)[^\n]*\{\{[^\n]*\}\}[^\n]*)$",
                "description": "The endpoint, http:// or https:// (a template over the context).",
            },
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "description": "Defaults to POST."},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Extra request headers (values are templates over the context).",
            },
            "body": {
                "description": "The JSON body (its strings are templates over the context); defaults to the instance "
                "context, except for GET."
            },
            "timeout": {
                **DURATION,
                "description": "Total deadline of the call, retries included; defaults to 10s, at most 30s.",
            },
        },
        required=["url"],
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The timeout must be a duration of at most `MAX_TIMEOUT`."""
        found = duration_violations(config, "timeout")
        timeout = config.get("timeout")
        if isinstance(timeout, str) and is_duration(timeout) and parse_duration(timeout) > MAX_TIMEOUT:
            found.append(
                FieldViolation("timeout", f"{timeout!r} is longer than the maximum of {MAX_DEADLINE_SECONDS:g}s")
            )
        return found

    async def execute(self, config: _b.Config, ctx: _b.NodeContext) -> _b.NodeResult:
        """See `behaviour.call_webhook`."""
        return await _b.call_webhook(config, ctx)

    async def resume(
        self, config: _b.Config, ctx: _b.NodeContext, trigger: str, data: Mapping[str, Any]
    ) -> _b.NodeResult:
        """See `behaviour.resumed_call`."""
        return _b.resumed_call(trigger, data)
