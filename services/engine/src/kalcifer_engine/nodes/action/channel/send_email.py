"""`send_email`: send an email rendered from a template."""

from __future__ import annotations

from kalcifer_engine.nodes.action.channel._base import ChannelSend, message_schema
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING


class SendEmail(ChannelSend):
    """Creates an email delivery for the participant from `template_id`."""

    key = "send_email"
    channel = "email"
    description = "Send an email rendered from a template."
    config_schema = message_schema(
        description,
        {
            "subject": {**NON_EMPTY_STRING, "description": "Overrides the template's subject."},
            "from_name": {**NON_EMPTY_STRING, "description": "Overrides the sender's display name."},
            "reply_to": {"type": "string", "format": "email", "description": "Reply-To address."},
        },
    )
