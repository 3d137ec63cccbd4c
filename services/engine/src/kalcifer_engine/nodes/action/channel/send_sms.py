"""`send_sms`: send an SMS rendered from a template."""

from __future__ import annotations

from kalcifer_engine.nodes.action.channel._base import ChannelSend, message_schema
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING


class SendSms(ChannelSend):
    """Creates an SMS delivery for the participant from `template_id`."""

    key = "send_sms"
    channel = "sms"
    description = "Send an SMS rendered from a template."
    config_schema = message_schema(
        description,
        {
            # Carriers cap alphanumeric sender ids at 11 characters.
            "sender_id": {**NON_EMPTY_STRING, "maxLength": 11, "description": "Alphanumeric sender id."},
        },
    )
