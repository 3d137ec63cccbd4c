"""Tenant webhook node types: the call they park on and how every answer shape and failure maps (SPEC 6.7, 6.10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kalcifer_common.outbound import CallAnswer, CallSpec
from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeResult, Waiting
from kalcifer_engine.nodes.webhook import WebhookNodeType

from tests.unit.engine.fake_context import FakeContext

URL = "https://hooks.example/score"


def webhook_type() -> WebhookNodeType:
    return WebhookNodeType(
        key="score_lead",
        category="condition",
        description="Scores a lead.",
        config_schema={"type": "object"},
        branches=("hot", "cold"),
        endpoint_url=URL,
        timeout_ms=2500,
    )


async def answered(answer: object) -> NodeResult:
    """The node resumed with a 200 whose body is `answer` as JSON."""
    data = CallAnswer(ok=True, status=200, body=orjson.dumps(answer)).to_data()
    return await webhook_type().resume({"threshold": 3}, FakeContext(), "call", data)


async def test_execute_parks_on_a_post_of_config_context_node_and_participant() -> None:
    ctx = FakeContext(data={"customer": {"tier": "gold"}})
    result = await webhook_type().execute({"threshold": 3}, ctx)
    body = {
        "config": {"threshold": 3},
        "context": {"customer": {"tier": "gold"}},
        "node_id": "n1",
        "participant_id": "p-1",
    }
    assert result == Waiting(kind="call", call=CallSpec(URL, "POST", {}, body, 2.5, https_only=True))


async def test_an_event_resume_parks_on_a_new_call_with_trigger_and_data() -> None:
    result = await webhook_type().resume({}, FakeContext(), "event", {"amount": 3})
    assert isinstance(result, Waiting)
    assert result.call is not None
    assert (result.call.body["trigger"], result.call.body["data"]) == ("event", {"amount": 3})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"result": "completed"}, Completed()),
        ({"result": "completed", "output": {"score": 9}}, Completed({"score": 9})),
        ({"result": "branched", "branch": "hot", "output": {"s": 1}}, Branched("hot", {"s": 1})),
        (
            {"result": "waiting", "fire_time": "2030-01-01T00:00:00+00:00"},
            Waiting(kind="timer", fire_time=datetime(2030, 1, 1, tzinfo=UTC)),
        ),
        (
            {"result": "waiting", "event_type": "reply", "event_filter": "event.ok"},
            Waiting(kind="event", event_type="reply", event_filter="event.ok"),
        ),
        (
            {"result": "waiting", "event_type": "reply", "fire_time": "2030-01-01T00:00:00Z"},
            Waiting(kind="event", event_type="reply", fire_time=datetime(2030, 1, 1, tzinfo=UTC)),
        ),
        ({"result": "failed", "reason": "no credit"}, Failed("node type 'score_lead' failed: no credit")),
    ],
)
async def test_answers_map_to_results(answer: dict[str, Any], expected: NodeResult) -> None:
    assert await answered(answer) == expected


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ([1, 2], "JSON object"),
        ({}, "'result' must be"),
        ({"result": "done"}, "'result' must be"),
        ({"result": "branched", "branch": "warm"}, "branch 'warm'"),
        ({"result": "branched"}, "branch None"),
        ({"result": "completed", "output": [1]}, "'output'"),
        ({"result": "waiting"}, "'fire_time' or 'event_type'"),
        ({"result": "waiting", "fire_time": "tomorrow"}, "'fire_time'"),
        ({"result": "waiting", "fire_time": "2030-01-01T00:00:00"}, "'fire_time'"),
        ({"result": "waiting", "event_type": ""}, "'event_type'"),
        ({"result": "waiting", "event_type": "x", "event_filter": 3}, "'event_filter'"),
        ({"result": "waiting", "event_type": "x", "event_filter": "event.a >"}, "'event_filter' \"event.a >\" is not"),
        (
            {"result": "waiting", "event_type": "x", "event_filter": "+".join(["1"] * 20_000)},
            "'event_filter' is 39999 characters long",
        ),
        (
            {"result": "waiting", "event_type": "x", "event_filter": "[1].map(a, [1].map(b, [1].map(c, c)))"},
            "'event_filter' nests 3 comprehension macros",
        ),
    ],
)
async def test_malformed_answers_fail_without_retry(answer: object, why: str) -> None:
    result = await answered(answer)
    assert isinstance(result, Failed)
    assert why in result.reason
    assert not result.retryable


async def test_failed_without_reason() -> None:
    assert await answered({"result": "failed"}) == Failed("node type 'score_lead' failed: no reason")


async def test_a_call_that_got_no_answer_fails_the_step_with_why() -> None:
    data = CallAnswer(ok=False, status=503, error="answered HTTP 503", attempts=3).to_data()
    result = await webhook_type().resume({}, FakeContext(), "call", data)
    assert result == Failed("node type 'score_lead': the call failed after 3 attempt(s): answered HTTP 503")


async def test_a_non_json_answer_fails_without_retry() -> None:
    data = CallAnswer(ok=True, status=200, body=b"<html>").to_data()
    result = await webhook_type().resume({}, FakeContext(), "call", data)
    assert isinstance(result, Failed)
    assert "not JSON" in result.reason
    assert not result.retryable


def test_retries_are_the_calls_not_the_engines() -> None:
    # The scheduler retries the call under one Idempotency-Key; an engine retry would make a second, new call.
    assert webhook_type().retries == 0
