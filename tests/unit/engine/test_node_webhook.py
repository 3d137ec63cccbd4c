"""Tenant webhook node types: the call they make and how every answer shape and failure maps (SPEC 6.7)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
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


def answering(answer: object) -> FakeContext:
    def reply(url: str, body: Mapping[str, Any], time_limit: timedelta) -> Mapping[str, Any]:
        return answer  # type: ignore[return-value]  # malformed answers on purpose

    return FakeContext(data={"customer": {"tier": "gold"}}, answer=reply)


def raising(error: Exception) -> FakeContext:
    def reply(url: str, body: Mapping[str, Any], time_limit: timedelta) -> Mapping[str, Any]:
        raise error

    return FakeContext(answer=reply)


async def run(ctx: FakeContext) -> NodeResult:
    return await webhook_type().execute({"threshold": 3}, ctx)


async def test_execute_posts_config_context_node_and_participant() -> None:
    ctx = answering({"result": "completed"})
    await run(ctx)
    assert ctx.posts == [
        (
            URL,
            {
                "config": {"threshold": 3},
                "context": {"customer": {"tier": "gold"}},
                "node_id": "n1",
                "participant_id": "p-1",
            },
            timedelta(milliseconds=2500),
        )
    ]


async def test_resume_adds_trigger_and_data() -> None:
    ctx = answering({"result": "completed"})
    await webhook_type().resume({}, ctx, "event", {"amount": 3})
    assert ctx.posts[0][1]["trigger"] == "event"
    assert ctx.posts[0][1]["data"] == {"amount": 3}


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
    assert await run(answering(answer)) == expected


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
    result = await run(answering(answer))
    assert isinstance(result, Failed)
    assert why in result.reason
    assert not result.retryable


async def test_failed_without_reason() -> None:
    assert await run(answering({"result": "failed"})) == Failed("node type 'score_lead' failed: no reason")


@pytest.mark.parametrize("error", [TimeoutError(), ConnectionError("refused")])
async def test_timeouts_and_connection_errors_are_retryable(error: Exception) -> None:
    result = await run(raising(error))
    assert isinstance(result, Failed)
    assert result.retryable


async def test_a_non_json_answer_fails_without_retry() -> None:
    result = await run(raising(ValueError("Expecting value")))
    assert isinstance(result, Failed)
    assert "not JSON" in result.reason
    assert not result.retryable


def test_webhook_types_allow_retries() -> None:
    assert webhook_type().retries == 3
