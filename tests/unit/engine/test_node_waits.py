"""Wait nodes park the path with the right timer or event wait, and resume the right way (SPEC 6.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeType, Waiting
from kalcifer_engine.nodes.behaviour import EVENT, TIMEOUT, TIMER

from tests.unit.engine.fake_context import NOW, FakeContext
from tests.unit.engine.samples import REGISTRY


def node(key: str) -> NodeType:
    found = REGISTRY.get(key)
    assert found is not None
    return found


async def test_wait_sets_a_timer_from_now() -> None:
    result = await node("wait").execute({"duration": "1.5h"}, FakeContext())
    assert result == Waiting(kind="timer", fire_time=NOW + timedelta(minutes=90))


async def test_wait_resumes_completed_on_its_timer() -> None:
    assert await node("wait").resume({"duration": "1s"}, FakeContext(), TIMER, {}) == Completed()


async def test_wait_refuses_an_event_resume() -> None:
    result = await node("wait").resume({"duration": "1s"}, FakeContext(), EVENT, {})
    assert isinstance(result, Failed)


async def test_wait_until_waits_for_the_given_time_with_its_offset() -> None:
    result = await node("wait_until").execute({"datetime": "2030-01-31T09:00:00+01:00"}, FakeContext())
    assert result == Waiting(kind="timer", fire_time=datetime(2030, 1, 31, 8, 0, tzinfo=UTC))


async def test_wait_until_in_the_past_still_waits() -> None:
    result = await node("wait_until").execute({"datetime": "2020-01-01T00:00:00Z"}, FakeContext())
    assert result == Waiting(kind="timer", fire_time=datetime(2020, 1, 1, tzinfo=UTC))


async def test_wait_until_without_offset_fails() -> None:
    result = await node("wait_until").execute({"datetime": "2030-01-01T00:00:00"}, FakeContext())
    assert isinstance(result, Failed)
    assert "offset" in result.reason


async def test_wait_until_resumes_completed() -> None:
    assert await node("wait_until").resume({"datetime": "2030-01-01T00:00:00Z"}, FakeContext(), TIMER, {}) == (
        Completed()
    )


CONFIG = {"event_type": "purchase", "timeout": "2d", "filter": "event.amount > 10"}


async def test_wait_for_event_waits_for_the_event_with_a_timeout() -> None:
    result = await node("wait_for_event").execute(CONFIG, FakeContext())
    assert result == Waiting(
        kind="event",
        event_type="purchase",
        event_filter="event.amount > 10",
        fire_time=NOW + timedelta(days=2),
        timeout_branch="timed_out",
    )


async def test_wait_for_event_without_filter() -> None:
    result = await node("wait_for_event").execute({"event_type": "x", "timeout": "1h"}, FakeContext())
    assert isinstance(result, Waiting)
    assert result.event_filter is None


async def test_wait_for_event_resumed_by_the_event_outputs_it() -> None:
    result = await node("wait_for_event").resume(CONFIG, FakeContext(), EVENT, {"amount": 20})
    assert result == Branched("event_received", {"event": {"amount": 20}})


async def test_wait_for_event_resumed_by_timeout_takes_timed_out() -> None:
    assert await node("wait_for_event").resume(CONFIG, FakeContext(), TIMEOUT, {}) == Branched("timed_out")
    # The scheduler fires an event wait's timer as "timer"; that is a timeout too.
    assert await node("wait_for_event").resume(CONFIG, FakeContext(), TIMER, {}) == Branched("timed_out")


async def test_wait_for_event_refuses_an_unknown_trigger() -> None:
    assert isinstance(await node("wait_for_event").resume(CONFIG, FakeContext(), "poke", {}), Failed)
