"""`send_whatsapp`: send a WhatsApp message from an approved template."""

from __future__ import annotations

from kalcifer_engine.nodes.action.channel._base import ChannelSend, message_schema


class SendWhatsapp(ChannelSend):
    """Creates a WhatsApp delivery from the approved template `template_id`."""

    key = "send_whatsapp"
    channel = "whatsapp"
    description = "Send a WhatsApp message from an approved template."
    config_schema = message_schema(
        description,
        {
            "language": {
                "type": "string",
                "pattern": "^[a-z]{2,3}(_[A-Z]{2})?$",
                "description": "The template's language as WhatsApp names it, e.g. 'en' or 'pt_BR'.",
            },
        },
    )
