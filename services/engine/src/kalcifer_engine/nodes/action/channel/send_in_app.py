"""`send_in_app`: show an in-app message rendered from a template."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer_common.errors import FieldViolation

from kalcifer_engine.nodes.action.channel._base import ChannelSend, message_schema
from kalcifer_engine.nodes.checks import duration_violations
from kalcifer_engine.nodes.schema import DURATION, NON_EMPTY_STRING


class SendInApp(ChannelSend):
    """Creates an in-app message from `template_id`, shown at `placement` until `expiry` has passed."""

    key = "send_in_app"
    channel = "in_app"
    description = "Show an in-app message rendered from a template."
    config_schema = message_schema(
        description,
        {
            "placement": {**NON_EMPTY_STRING, "description": "Where the app shows it, e.g. 'home_banner'."},
            "expiry": {**DURATION, "description": "How long the message stays available, e.g. '7d'."},
        },
    )

    def semantic_violations(self, config: Mapping[str, Any]) -> list[FieldViolation]:
        """The expiry must be a duration."""
        return duration_violations(config, "expiry")
