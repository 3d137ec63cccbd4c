"""Action, trigger and end nodes ask the context for their effects and report them (SPEC 6.2, 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from kalcifer_common.outbound import CallAnswer, CallSpec
from kalcifer_engine.nodes.base import Completed, Failed, NodeResult, NodeType, Skipped, Waiting
from kalcifer_engine.nodes.governance import JourneyRules

from tests.unit.engine.fake_context import NOW, FakeContext
from tests.unit.engine.samples import REGISTRY


def node(key: str) -> NodeType:
    found = REGISTRY.get(key)
    assert found is not None
    return found


CUSTOMER = {"customer": {"email": "ada@example.com", "phone": "+33600000000", "attributes": {"tier": "gold"}}}


@pytest.mark.parametrize(
    ("key", "channel", "extra"),
    [
        ("send_email", "email", {"subject": "Hi"}),
        ("send_sms", "sms", {"sender_id": "Kalcifer"}),
        ("send_push", "push", {"title": "Hey"}),
        ("send_whatsapp", "whatsapp", {}),
        ("send_in_app", "in_app", {"placement": "home"}),
    ],
)
async def test_channel_send_creates_one_delivery(key: str, channel: str, extra: dict[str, Any]) -> None:
    ctx = FakeContext(data=CUSTOMER)
    result = await node(key).execute({"template_id": "t1", "data": {"coupon": "X"}, **extra}, ctx)
    assert result == Completed({"delivery_key": f"{ctx.instance_id}:n1:1"})
    assert ctx.deliveries == [
        (
            channel,
            "t1",
            {
                "participant_id": "p-1",
                "email": "ada@example.com",
                "phone": "+33600000000",
                "data": {"coupon": "X"},
                **extra,
                # What the template is rendered over at send time: the context, the node's data, the participant.
                "variables": {**CUSTOMER, "data": {"coupon": "X"}, "participant_id": "p-1"},
            },
        )
    ]


async def test_channel_send_without_customer_or_data() -> None:
    ctx = FakeContext()
    await node("send_push").execute({"template_id": "t1"}, ctx)
    variables = {"data": {}, "participant_id": "p-1"}
    assert ctx.deliveries == [("push", "t1", {"participant_id": "p-1", "data": {}, "variables": variables})]


@pytest.mark.parametrize(
    ("key", "customer", "missing"),
    [
        ("send_email", {}, "email"),
        ("send_email", {"email": "  "}, "email"),
        ("send_sms", {"email": "a@example.com"}, "phone"),
        ("send_whatsapp", {"phone": ""}, "phone"),
    ],
)
async def test_a_send_with_no_address_is_skipped_no_contact(key: str, customer: dict[str, Any], missing: str) -> None:
    ctx = FakeContext(data={"customer": customer})
    result = await node(key).execute({"template_id": "t1"}, ctx)
    assert isinstance(result, Skipped)
    assert (result.reason, result.output["missing"]) == ("NO_CONTACT", missing)
    assert ctx.deliveries == []


async def test_a_send_on_an_opted_out_channel_is_skipped_preference_off() -> None:
    ctx = FakeContext(data=CUSTOMER, refused_channels={"email"})
    assert await node("send_email").execute({"template_id": "t1"}, ctx) == Skipped(
        "PREFERENCE_OFF", {"channel": "email"}
    )
    assert ctx.deliveries == []


def _rules(cap: dict[str, Any] | None = None, quiet: dict[str, Any] | None = None) -> JourneyRules:
    return JourneyRules.from_row("j1", cap, quiet)


async def test_a_send_at_the_journeys_cap_is_skipped_frequency_capped() -> None:
    ctx = FakeContext(data=CUSTOMER, delivery_counts={"any": 2}, rules=_rules({"max_messages": 2, "time_window": "1d"}))
    result = await node("send_sms").execute({"template_id": "t1"}, ctx)
    assert result == Skipped("FREQUENCY_CAPPED", {"count": 2, "max_messages": 2})
    assert ctx.count_queries == [("any", NOW - timedelta(days=1))]


async def test_a_cap_on_another_channel_does_not_count_this_send() -> None:
    cap = {"max_messages": 1, "time_window": "1d", "channel": "email"}
    ctx = FakeContext(data=CUSTOMER, delivery_counts={"email": 5}, rules=_rules(cap))
    assert isinstance(await node("send_sms").execute({"template_id": "t1"}, ctx), Completed)
    assert ctx.count_queries == []


async def test_a_send_in_quiet_hours_is_deferred_to_their_end_in_the_customers_timezone() -> None:
    # NOW is 12:00 UTC = 21:00 in Tokyo: inside 20:00-08:00, so the send waits for 08:00 Tokyo = 23:00 UTC.
    customer = {"customer": {**CUSTOMER["customer"], "timezone": "Asia/Tokyo"}}
    ctx = FakeContext(data=customer, rules=_rules(quiet={"start": "20:00", "end": "08:00"}))
    result = await node("send_email").execute({"template_id": "t1"}, ctx)
    expected = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
    assert result == Completed({"delivery_key": f"{ctx.instance_id}:n1:1", "deferred_until": expected.isoformat()})
    assert ctx.send_afters == [expected]


async def test_call_webhook_parks_on_its_call_with_templates_filled_in() -> None:
    ctx = FakeContext(data={"a": 1, "customer": {"attributes": {"tier": "gold"}}, "_participant_id": "p-1"})
    config = {
        "url": "https://x.example/h/{{ _participant_id }}",
        "method": "PUT",
        "headers": {"X-Tier": "{{ customer.attributes.tier }}"},
        "body": {"b": 2, "who": "{{ _participant_id }}", "n": [1, "{{ a + 1 }}"]},
        "timeout": "4s",
    }
    result = await node("call_webhook").execute(config, ctx)
    body = {"b": 2, "who": "p-1", "n": [1, "2"]}
    assert result == Waiting(
        kind="call", call=CallSpec("https://x.example/h/p-1", "PUT", {"X-Tier": "gold"}, body, 4.0)
    )
    assert ctx.deliveries == []


async def test_call_webhook_defaults_to_posting_the_context_unrendered() -> None:
    ctx = FakeContext(data={"a": "{{ 7 * 7 }}"})
    result = await node("call_webhook").execute({"url": "https://x.example/h"}, ctx)
    assert isinstance(result, Waiting)
    assert result.call is not None
    assert (result.call.method, result.call.body, result.call.deadline_seconds) == ("POST", {"a": "{{ 7 * 7 }}"}, 10.0)


async def test_call_webhook_get_sends_no_body() -> None:
    result = await node("call_webhook").execute({"url": "https://x.example/h", "method": "GET"}, FakeContext())
    assert isinstance(result, Waiting)
    assert result.call is not None
    assert result.call.body is None


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"url": "https://x.example/{{ missing.field }}"}, "could not fill in its templates"),
        ({"url": "{{ 'ftp://x' }}"}, "is not an http(s) URL"),
        ({"url": "https://x.example/", "body": {"x": "{% for %}"}}, "could not fill in its templates"),
    ],
)
async def test_call_webhook_templates_that_fail_fail_the_step(config: dict[str, Any], why: str) -> None:
    result = await node("call_webhook").execute(config, FakeContext())
    assert isinstance(result, Failed)
    assert why in result.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (CallAnswer(ok=True, status=200, body=b'{"score": 42}'), Completed({"score": 42})),
        (CallAnswer(ok=True, status=200, body=b"[1, 2]"), Completed({"body": [1, 2]})),
        (CallAnswer(ok=True, status=204), Completed({"status": 204})),
        (CallAnswer(ok=True, status=200, body=b"fine"), Completed({"status": 200, "body": "fine"})),
        (
            CallAnswer(ok=False, status=500, error="answered HTTP 500", attempts=3),
            Failed("the call failed after 3 attempt(s): answered HTTP 500"),
        ),
    ],
)
async def test_call_webhook_resumes_with_its_answer(answer: CallAnswer, expected: NodeResult) -> None:
    assert await node("call_webhook").resume({}, FakeContext(), "call", answer.to_data()) == expected


async def test_update_profile_merges_fields() -> None:
    ctx = FakeContext()
    result = await node("update_profile").execute({"fields": {"tier": "gold", "score": 3}}, ctx)
    assert isinstance(result, Completed)
    assert ctx.profile == {"tier": "gold", "score": 3}


async def test_add_tag_adds_it() -> None:
    ctx = FakeContext()
    assert await node("add_tag").execute({"tag": "vip"}, ctx) == Completed({"tag": "vip"})
    assert ctx.tags == ["vip"]


async def test_custom_code_stores_the_value_under_output() -> None:
    ctx = FakeContext(data={"customer": {"age": 30}})
    result = await node("custom_code").execute({"expression": "customer.age * 2", "output": "double"}, ctx)
    assert result == Completed({"double": 60})


async def test_custom_code_defaults_to_result() -> None:
    assert await node("custom_code").execute({"expression": "1 + 1"}, FakeContext()) == Completed({"result": 2})


@pytest.mark.parametrize("expression", ["customer.missing.deep", "1 / 0", "'a' + 1"])
async def test_custom_code_evaluation_error_fails(expression: str) -> None:
    result = await node("custom_code").execute({"expression": expression}, FakeContext(data={"customer": {}}))
    assert isinstance(result, Failed)
    assert result.reason.startswith("custom_code expression failed")
    assert not result.retryable


async def test_track_conversion_records_revenue_as_decimal() -> None:
    ctx = FakeContext()
    await node("track_conversion").execute({"event_name": "purchase", "revenue": 19.99}, ctx)
    await node("track_conversion").execute({"event_name": "signup"}, ctx)
    assert ctx.conversions == [("purchase", Decimal("19.99"), "conversion"), ("signup", None, "conversion")]


@pytest.mark.parametrize(
    ("key", "config"),
    [
        ("event_entry", {"event_type": "signup"}),
        ("segment_entry", {"segment_id": "s1"}),
        ("webhook_entry", {"webhook_path": "in"}),
    ],
)
async def test_triggers_complete(key: str, config: dict[str, Any]) -> None:
    ctx = FakeContext()
    assert await node(key).execute(config, ctx) == Completed({"participant_id": "p-1"})
    assert ctx.deliveries == []
    assert ctx.conversions == []


@pytest.mark.parametrize(("config", "output"), [({}, {}), ({"reason": "unsubscribed"}, {"reason": "unsubscribed"})])
async def test_exit_completes_with_its_reason_as_the_steps_output(
    config: dict[str, Any], output: dict[str, Any]
) -> None:
    ctx = FakeContext()
    assert await node("exit").execute(config, ctx) == Completed(output)
    assert ctx.deliveries == []


async def test_goal_reached_records_a_goal() -> None:
    ctx = FakeContext()
    assert await node("goal_reached").execute({"goal_name": "bought"}, ctx) == Completed({"goal_name": "bought"})
    assert ctx.conversions == [("bought", None, "goal")]
