"""`send_push`: send a push notification rendered from a template."""

from __future__ import annotations

from kalcifer_engine.nodes.action.channel._base import ChannelSend, message_schema
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING


class SendPush(ChannelSend):
    """Creates a push delivery to the participant's devices from `template_id`."""

    key = "send_push"
    channel = "push"
    description = "Send a push notification rendered from a template."
    config_schema = message_schema(
        description,
        {
            "title": {**NON_EMPTY_STRING, "description": "Overrides the template's title."},
            "deep_link": {**NON_EMPTY_STRING, "format": "uri", "description": "Where tapping the notification leads."},
        },
    )
