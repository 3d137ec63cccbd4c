"""The 23 built-in node types of SPEC 6.2, by category."""

from __future__ import annotations

from kalcifer_engine.nodes.action.channel.call_webhook import CallWebhook
from kalcifer_engine.nodes.action.channel.send_email import SendEmail
from kalcifer_engine.nodes.action.channel.send_in_app import SendInApp
from kalcifer_engine.nodes.action.channel.send_push import SendPush
from kalcifer_engine.nodes.action.channel.send_sms import SendSms
from kalcifer_engine.nodes.action.channel.send_whatsapp import SendWhatsapp
from kalcifer_engine.nodes.action.data.add_tag import AddTag
from kalcifer_engine.nodes.action.data.custom_code import CustomCode
from kalcifer_engine.nodes.action.data.track_conversion import TrackConversion
from kalcifer_engine.nodes.action.data.update_profile import UpdateProfile
from kalcifer_engine.nodes.base import NodeType
from kalcifer_engine.nodes.condition.ab_split import AbSplit
from kalcifer_engine.nodes.condition.check_segment import CheckSegment
from kalcifer_engine.nodes.condition.condition import Condition
from kalcifer_engine.nodes.condition.frequency_cap import FrequencyCap
from kalcifer_engine.nodes.condition.preference_gate import PreferenceGate
from kalcifer_engine.nodes.end.exit import Exit
from kalcifer_engine.nodes.end.goal_reached import GoalReached
from kalcifer_engine.nodes.trigger.event_entry import EventEntry
from kalcifer_engine.nodes.trigger.segment_entry import SegmentEntry
from kalcifer_engine.nodes.trigger.webhook_entry import WebhookEntry
from kalcifer_engine.nodes.wait.wait import Wait
from kalcifer_engine.nodes.wait.wait_for_event import WaitForEvent
from kalcifer_engine.nodes.wait.wait_until import WaitUntil

BUILTIN_NODE_TYPES: tuple[type[NodeType], ...] = (
    EventEntry,
    SegmentEntry,
    WebhookEntry,
    SendEmail,
    SendSms,
    SendPush,
    SendWhatsapp,
    SendInApp,
    CallWebhook,
    UpdateProfile,
    AddTag,
    CustomCode,
    TrackConversion,
    Wait,
    WaitUntil,
    WaitForEvent,
    Condition,
    AbSplit,
    FrequencyCap,
    CheckSegment,
    PreferenceGate,
    Exit,
    GoalReached,
)
