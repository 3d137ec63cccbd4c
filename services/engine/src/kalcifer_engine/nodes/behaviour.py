"""What the built-in nodes do when run (SPEC 6.2), kept apart from their declarations (schemas, branches).

Each built-in's `execute` / `resume` is a one-line call into this module, so the behaviour of all 23 types can
be read (and reviewed) in one place. Everything goes through `NodeContext`: no database, network or clock here.
Bad data yields `Failed`, never an exception, so the walker can record why a path stopped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

from kalcifer_common.comparisons import MISSING, compare
from kalcifer_common.durations import parse_duration
from kalcifer_common.outbound import CALL_TRIGGER, CallAnswer, CallSpec
from kalcifer_common.templates import VARIABLES_KEY, send_variables

from kalcifer_engine.nodes import governance
from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeResult, Skipped, Waiting
from kalcifer_engine.nodes.context import NodeContext

__all__ = ["CALL", "EVENT", "TIMEOUT", "TIMER", "Config", "NodeContext", "NodeResult"]

Config: TypeAlias = Mapping[str, Any]

# The `trigger` argument of `NodeType.resume`: why a waiting node is continued.
TIMER = "timer"  # a timer wait's fire_time arrived (wait, wait_until)
EVENT = "event"  # the awaited event arrived (wait_for_event); `data` is the event
TIMEOUT = "timeout"  # an event wait's fire_time came first (wait_for_event -> its timeout_branch)
CALL = CALL_TRIGGER  # the outbound call of a call wait was made; `data` is its `CallAnswer`

DEFAULT_CALL_TIMEOUT = "10s"
# What a filled-in call_webhook url must look like (the scheduler checks where it points).
_HTTP_URL = re.compile(r"https?://[^\s/?#]+([/?#]\S*)?")


def entered(ctx: NodeContext) -> NodeResult:
    """Triggers only mark where an instance entered; the entry context is already the instance's data."""
    return Completed({"participant_id": ctx.participant_id})


def ended(config: Config) -> NodeResult:
    """`exit`: the normal end of the instance (COMPLETED); the configured `reason`, if any, is the step's output."""
    reason = config.get("reason")
    return Completed({"reason": reason} if isinstance(reason, str) and reason else {})


async def send(channel: str, config: Config, ctx: NodeContext, extra_fields: tuple[str, ...]) -> NodeResult:
    """Create a delivery, governed as SPEC 7 says (`nodes.governance`): skipped when the customer opted out of
    the channel, has no address for it, or reached the journey's frequency cap; deferred out of quiet hours.

    The payload carries the participant, their contact, the node's `data` and the channel's own fields, plus the
    variables its template is rendered over when the scheduler sends it (`kalcifer_common.templates`).
    """
    if not await ctx.preference(channel):
        return Skipped(governance.PREFERENCE_OFF, {"channel": channel})
    profile = await ctx.recipient()
    missing = governance.missing_contact(channel, profile)
    if missing is not None:
        return Skipped(governance.NO_CONTACT, {"channel": channel, "missing": missing})
    rules = await ctx.journey_rules()
    cap = rules.frequency_cap if rules is not None else None
    if cap is not None and cap.counts(channel):
        count = await ctx.count_deliveries(cap.channel or "any", ctx.now - cap.window)
        if count >= cap.max_messages:
            return Skipped(governance.FREQUENCY_CAPPED, {"count": count, "max_messages": cap.max_messages})
    send_after = None
    if rules is not None and rules.quiet_hours is not None:
        zone = (profile or {}).get("timezone")
        send_after = governance.deferred_until(ctx.now, rules.quiet_hours, zone if isinstance(zone, str) else None)
    payload: dict[str, Any] = {"participant_id": ctx.participant_id}
    for name in ("email", "phone"):
        if profile and profile.get(name) is not None:
            payload[name] = profile[name]
    payload["data"] = dict(config.get("data") or {})
    for name in extra_fields:
        if name in config:
            payload[name] = config[name]
    payload[VARIABLES_KEY] = send_variables(ctx.data, payload["data"], ctx.participant_id)
    key = await ctx.create_delivery(channel, config["template_id"], payload, send_after=send_after)
    output: dict[str, Any] = {"delivery_key": key}
    if send_after is not None:
        output["deferred_until"] = send_after.isoformat()
    return Completed(output)


async def call_webhook(config: Config, ctx: NodeContext) -> NodeResult:
    """Park on the call (SPEC 6.10); the scheduler makes it out of the run and resumes with the answer.

    `url`, header values and the strings of `body` are Jinja2 templates over the context (rendered in the
    sandbox); without a `body`, a non-GET request sends the context itself, as data (never rendered).
    """
    method = config.get("method", "POST")
    templates = {"url": config["url"], "headers": dict(config.get("headers") or {})}
    if "body" in config:
        templates["body"] = config["body"]
    try:
        rendered = await ctx.render(templates)
    except ValueError as error:
        return Failed(f"call_webhook could not fill in its templates: {error}")
    url = rendered["url"]
    if not isinstance(url, str) or not _HTTP_URL.fullmatch(url):
        return Failed(f"call_webhook url {str(url)[:200]!r} is not an http(s) URL once filled in")
    default_body = None if method == "GET" else dict(ctx.data)
    body = rendered.get("body", default_body)
    deadline = parse_duration(config.get("timeout", DEFAULT_CALL_TIMEOUT)).total_seconds()
    return Waiting(kind="call", call=CallSpec(url, method, dict(rendered["headers"]), body, deadline))


def resumed_call(trigger: str, data: Config) -> NodeResult:
    """`call_webhook` after its call: a 2xx answer's JSON object is the output (other JSON is at `body`)."""
    if trigger != CALL:
        return Failed(f"a call wait cannot be resumed by {trigger!r}")
    answer = CallAnswer.from_data(data)
    if not answer.ok:
        return Failed(f"the call failed after {answer.attempts} attempt(s): {answer.error}")
    try:
        body = answer.json_body()
    except ValueError:
        return Completed({"status": answer.status, "body": answer.body.decode("utf-8", errors="replace")})
    if isinstance(body, dict):
        return Completed(body)
    return Completed({"status": answer.status} if body is None else {"body": body})


async def update_profile(config: Config, ctx: NodeContext) -> NodeResult:
    await ctx.update_profile(config["fields"])
    return Completed({"updated": sorted(config["fields"])})


async def add_tag(config: Config, ctx: NodeContext) -> NodeResult:
    await ctx.add_tag(config["tag"])
    return Completed({"tag": config["tag"]})


async def custom_code(config: Config, ctx: NodeContext) -> NodeResult:
    """Evaluate CEL (never Python); an evaluation error, or one stopped by its budget, is the flow's data problem,
    so a Failed result that is not retried (the same data would stop it again)."""
    try:
        value = await ctx.evaluate(config["expression"])
    except ValueError as error:
        return Failed(f"custom_code expression failed: {error}")
    return Completed({config.get("output") or "result": value})


async def track_conversion(config: Config, ctx: NodeContext) -> NodeResult:
    revenue = config.get("revenue")
    amount = None if revenue is None else Decimal(str(revenue))
    await ctx.record_conversion(config["event_name"], amount)
    return Completed({"event_name": config["event_name"]})


def wait(config: Config, ctx: NodeContext) -> NodeResult:
    return Waiting(kind="timer", fire_time=ctx.now + parse_duration(config["duration"]))


def wait_until(config: Config, ctx: NodeContext) -> NodeResult:
    """A time already past still waits: the scheduler fires it at once, keeping one path through the scheduler."""
    try:
        when = datetime.fromisoformat(config["datetime"])
    except ValueError as error:
        return Failed(f"wait_until datetime is not ISO 8601: {error}")
    if when.utcoffset() is None:
        return Failed("wait_until datetime needs a UTC offset")
    return Waiting(kind="timer", fire_time=when)


def wait_for_event(config: Config, ctx: NodeContext) -> NodeResult:
    return Waiting(
        kind="event",
        event_type=config["event_type"],
        event_filter=config.get("filter"),
        fire_time=ctx.now + parse_duration(config["timeout"]),
        timeout_branch="timed_out",
    )


def resumed_timer(trigger: str) -> NodeResult:
    if trigger != TIMER:
        return Failed(f"a timer wait cannot be resumed by {trigger!r}")
    return Completed()


def resumed_event(trigger: str, data: Config) -> NodeResult:
    if trigger == EVENT:
        return Branched("event_received", {"event": dict(data)})
    if trigger in (TIMEOUT, TIMER):
        return Branched("timed_out")
    return Failed(f"an event wait cannot be resumed by {trigger!r}")


def condition(config: Config, ctx: NodeContext) -> NodeResult:
    """`true` when the context value at `field` satisfies `operator` with `value` (`kalcifer_common.comparisons`,
    the rule segments use too): JSON-typed, a missing field fails all but `neq` / `not_in`, never raises."""
    found, actual = ctx.lookup(config["field"])
    outcome = compare(config["operator"], actual if found else MISSING, config.get("value"))
    return Branched("true" if outcome else "false")


async def ab_split(config: Config, ctx: NodeContext) -> NodeResult:
    variants = [(v["key"], float(v["weight"])) for v in config["variants"]]
    return Branched(await ctx.sticky_variant(variants))


async def frequency_cap(config: Config, ctx: NodeContext) -> NodeResult:
    since = ctx.now - parse_duration(config["time_window"])
    count = await ctx.count_deliveries(config["channel"], since)
    return Branched("allowed" if count < config["max_messages"] else "capped", {"count": count})


async def check_segment(config: Config, ctx: NodeContext) -> NodeResult:
    return Branched("true" if await ctx.in_segment(config["segment_id"]) else "false")


async def preference_gate(config: Config, ctx: NodeContext) -> NodeResult:
    return Branched("true" if await ctx.preference(config["channel"]) else "false")


async def goal_reached(config: Config, ctx: NodeContext) -> NodeResult:
    await ctx.record_conversion(config["goal_name"], None, kind="goal")
    return Completed({"goal_name": config["goal_name"]})
