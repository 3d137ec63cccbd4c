"""Routing stored events (SPEC 6.6): apply journeys' goals and exit criteria, resume the participant's matching
waits, start matching event_entry flows.

Routing one event is one transaction that claims the event row (`routed_time`), runs every resume and start it
causes, and stores its answer (`route_result`); a repeated RouteEvent for the same event replays that answer, and
an event whose routing never committed (the engine died) is routed by recovery.

Early events (an event that arrives just before the wait for it is armed): when a run arms a `wait_for_event`,
then after that run commits the engine looks back over the participant's events of that type received since
`event_lookback_seconds` before the node ran, and resumes the wait with the earliest one that passes its filter
and has not already resumed a wait of the same instance. Checking after the commit closes the race: an event
committed before the wait was visible is found by the lookback, an event committed after it finds the wait
when routed; if both happen, the wait's pending check makes the second a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from kalcifer_common.errors import NotFound
from kalcifer_common.logging import get_logger
from kalcifer_common.sandbox import ExpressionRunaway
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.customers import customer_profile, insert_conversion
from kalcifer_engine.repo.events import Lookback, recent_events, save_route_result, stored_route_result
from kalcifer_engine.repo.instances import lock_instance, participant_live_instances
from kalcifer_engine.repo.journeys import ListeningJourney
from kalcifer_engine.repo.routing import EVENT_ENTRY, Claimed, claim_for_routing
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.group_commit import GroupCommit, Refused
from kalcifer_engine.runtime.resumes import ResumeRequest, filter_passes, resume_in
from kalcifer_engine.runtime.run import ArmedEventWait, Effects, exit_instance
from kalcifer_engine.runtime.starts import StartRequest, start_instance

_log = get_logger(__name__)

LOOKBACK_LIMIT = 20
# Events routed per transaction in a RouteEvents batch.
BATCH_COMMIT_SIZE = 50


@dataclass(frozen=True)
class EventToRoute:
    """A stored event, parsed at the edge."""

    tenant_id: uuid.UUID
    event_id: uuid.UUID
    participant_id: str
    event_type: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class RouteResult:
    """How many waiting instances the event resumed and how many it started, and which."""

    resumed: int
    started: int
    instance_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As stored in `events.route_result`."""
        return {"resumed": self.resumed, "started": self.started, "instance_ids": list(self.instance_ids)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteResult:
        """From `events.route_result`."""
        return cls(int(data.get("resumed", 0)), int(data.get("started", 0)), tuple(data.get("instance_ids", ())))


async def route_event(rt: Runtime, event: EventToRoute) -> RouteResult:
    """Route one stored event of the tenant (NOT_FOUND if there is no such event); idempotent per event id."""
    effects = Effects()
    async with rt.transaction(effects) as conn:
        result = await _route_in(rt, conn, event, effects, now=rt.now())
    await rt.after_commit(effects)
    return result


def grouped_routes(rt: Runtime) -> GroupCommit[EventToRoute, RouteResult]:
    """RouteEvent in shared transactions (`group_commit`): an event that is not stored is refused before anything
    was written; what routing a claimed event raises rolls its transaction back."""

    async def route_in(
        rt: Runtime, conn: AsyncConnection, event: EventToRoute, effects: Effects, now: datetime
    ) -> RouteResult:
        return await _route_in(rt, conn, event, effects, now=now, if_not_stored=_refused)

    return GroupCommit(rt, "RouteEvent", route_in)


def _refused(event: EventToRoute, not_stored: NotFound) -> RouteResult:
    raise Refused(not_stored) from not_stored


def _reraised(event: EventToRoute, not_stored: NotFound) -> RouteResult:
    raise not_stored


async def _route_in(
    rt: Runtime,
    conn: AsyncConnection,
    event: EventToRoute,
    effects: Effects,
    *,
    now: datetime,
    if_not_stored: Callable[[EventToRoute, NotFound], RouteResult] = _reraised,
) -> RouteResult:
    """Claim the event and route it in the caller's transaction, or replay its earlier answer. The claim's NOT_FOUND
    (the event is not stored; nothing written) goes to `if_not_stored`; what routing a claimed event raises goes to
    the caller, whose transaction must roll back."""
    try:
        claimed = await _claim_or_replay(conn, event, now)
    except NotFound as not_stored:
        return if_not_stored(event, not_stored)
    if isinstance(claimed, RouteResult):
        return claimed
    return await _route_claimed(rt, conn, event, claimed, effects, now=now)


async def _claim_or_replay(conn: AsyncConnection, event: EventToRoute, now: datetime) -> Claimed | RouteResult:
    """Claim the event for this transaction (with what it routes to), or the answer of its earlier routing;
    NOT_FOUND (having written nothing) when there is no such event."""
    claimed = await claim_for_routing(
        conn,
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        participant_id=event.participant_id,
        event_type=event.event_type,
        now=now,
    )
    if claimed is not None:
        return claimed
    stored, answer = await stored_route_result(conn, event.tenant_id, event.event_id)
    if not stored:
        raise NotFound("event", f"events/{event.event_id}")
    return RouteResult.from_json(answer)


async def _route_claimed(
    rt: Runtime, conn: AsyncConnection, event: EventToRoute, claimed: Claimed, effects: Effects, *, now: datetime
) -> RouteResult:
    await _apply_journeys(rt, conn, event, claimed.journeys, effects, now=now)
    resumed: list[str] = []
    for wait in claimed.waits:
        outcome = await resume_in(
            rt,
            conn,
            ResumeRequest(wait.instance_id, wait.id, "event", dict(event.data), event_id=event.event_id),
            effects,
            now=now,
            known_wait=wait,
        )
        if outcome.applied and str(wait.instance_id) not in resumed:
            resumed.append(str(wait.instance_id))
    started = await _start_matching_flows(rt, conn, event, claimed.entry_flows, effects, now=now)
    result = RouteResult(len(resumed), len(started), tuple(resumed + started))
    await save_route_result(conn, event.event_id, result.to_json())
    return result


async def _apply_journeys(
    rt: Runtime,
    conn: AsyncConnection,
    event: EventToRoute,
    listening: Sequence[ListeningJourney],
    effects: Effects,
    *,
    now: datetime,
) -> None:
    """Journeys' goals and exit criteria on this event (SPEC 7), before the event resumes or starts anything: for
    each of the participant's live instances of a journey's flow, a matching goal records a conversion (once per
    instance; revenue from the event's `revenue`), and a matching exit criterion exits the instance
    (`exit_criterion:<event_type>`), cancelling its waits and timers. Filters see `event` and the instance context;
    one that cannot be evaluated, or that runs over its budget, does not match."""
    if not listening:
        return
    by_flow = {journey.flow_id: journey for journey in listening}
    live = await participant_live_instances(conn, event.tenant_id, event.participant_id, list(by_flow))
    for instance_id, flow_id in live:
        instance = await lock_instance(conn, instance_id)
        if instance is None or not instance.live:
            continue
        journey = by_flow[flow_id]
        for goal in journey.goals:
            if await _journey_filter_passes(rt, goal, instance.context, event):
                revenue = _revenue(event.data)
                recorded = await insert_conversion(
                    conn,
                    tenant_id=event.tenant_id,
                    instance_id=instance.id,
                    flow_id=flow_id,
                    participant_id=event.participant_id,
                    name=str(goal.get("name", "")),
                    revenue=revenue,
                    kind="goal",
                    now=now,
                )
                effects.tally.conversion_recorded(instance.cohort(now), recorded, revenue)
        for criterion in journey.exits:
            if await _journey_filter_passes(rt, criterion, instance.context, event):
                await exit_instance(conn, instance, f"exit_criterion:{event.event_type}", effects, now=now)
                break


async def _journey_filter_passes(
    rt: Runtime, rule: Mapping[str, Any], context: Mapping[str, Any], event: EventToRoute
) -> bool:
    try:
        return await filter_passes(rt.expressions, _filter_of(rule), context, event.data)
    except ExpressionRunaway as error:
        _log.warning("journey filter stopped", event_type=event.event_type, reason=str(error))
        return False


def _revenue(data: Mapping[str, Any]) -> Decimal | None:
    value = data.get("revenue")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return None
    return amount if amount.is_finite() else None


async def _start_matching_flows(
    rt: Runtime,
    conn: AsyncConnection,
    event: EventToRoute,
    candidates: Sequence[tuple[uuid.UUID, int]],
    effects: Effects,
    *,
    now: datetime,
) -> list[str]:
    """Start every active flow of the tenant with an event_entry for this event type (`candidates`) whose filter
    passes."""
    started: list[str] = []
    payload = {"event": dict(event.data)}
    profile: list[dict[str, Any] | None] = []  # the participant's profile, read once, on the first filter

    async def entry_context(flow_id: uuid.UUID) -> dict[str, Any]:
        """What an entry filter sees besides `event` (SPEC 6.2): the context the instance would start with."""
        if not profile:
            profile.append(await customer_profile(conn, event.tenant_id, event.participant_id))
        context: dict[str, Any] = {
            "_participant_id": event.participant_id,
            "_tenant_id": str(event.tenant_id),
            "_flow_id": str(flow_id),
        }
        if profile[0] is not None:
            context["customer"] = profile[0]
        return context

    for flow_id, version in candidates:
        graph = await rt.graph(conn, flow_id, version)
        entries = tuple(
            [
                node.id
                for node in graph.nodes
                if node.type == EVENT_ENTRY
                and node.config.get("event_type") == event.event_type
                and await _entry_filter_passes(
                    rt, flow_id, node.id, _filter_of(node.config), payload["event"], entry_context
                )
            ]
        )
        if not entries:
            continue
        instance_id = await start_instance(
            rt,
            conn,
            StartRequest(
                tenant_id=event.tenant_id,
                flow_id=flow_id,
                participant_id=event.participant_id,
                context={},
                entry_node_ids=entries,
                event=payload["event"],
            ),
            effects,
            now=now,
            skip_if_in_flow=True,
            graph=graph,
        )
        if instance_id is not None:
            started.append(str(instance_id))
    return started


async def _entry_filter_passes(
    rt: Runtime,
    flow_id: uuid.UUID,
    node_id: str,
    expression: str | None,
    event: Mapping[str, Any],
    context_of: Callable[[uuid.UUID], Awaitable[dict[str, Any]]],
) -> bool:
    """Whether the entry's filter passes over `event` and the would-be context (the customer profile included).
    An entry filter stopped by its budget starts nothing (there is no instance yet whose step could fail)."""
    if expression is None:
        return True
    try:
        return await filter_passes(rt.expressions, expression, await context_of(flow_id), event)
    except ExpressionRunaway as error:
        _log.warning("event_entry filter stopped", flow_id=str(flow_id), node_id=node_id, reason=str(error))
        return False


def _filter_of(config: Mapping[str, Any]) -> str | None:
    value = config.get("filter")
    return value if isinstance(value, str) and value else None


async def route_events(rt: Runtime, events: Sequence[EventToRoute]) -> list[RouteResult]:
    """Route a batch in order, several events per transaction (SPEC 9: few transactions per batch).

    An event that is not stored answers zeros (and is logged) rather than failing the others. If a shared
    transaction fails (a database error, e.g. a deadlock with another batch, or an event whose routing failed
    after it wrote), it rolls back whole and its events are routed again one transaction each; routing is
    idempotent per event, so nothing is applied twice.
    """
    results: list[RouteResult] = []
    for start in range(0, len(events), BATCH_COMMIT_SIZE):
        chunk = events[start : start + BATCH_COMMIT_SIZE]
        effects = Effects()
        try:
            async with rt.transaction(effects) as conn:
                now = rt.now()
                chunk_results = [
                    await _route_in(rt, conn, event, effects, now=now, if_not_stored=_zeros) for event in chunk
                ]
        except Exception as error:  # noqa: BLE001 - a database error, or a failure after an event's writes
            _log.warning("batched routing failed; routing one by one", error=repr(error), size=len(chunk))
            effects = Effects()
            chunk_results = []
            for event in chunk:
                try:
                    chunk_results.append(await route_event(rt, event))
                except NotFound:
                    chunk_results.append(RouteResult(0, 0, ()))
        results += chunk_results
        await rt.after_commit(effects)
    return results


def _zeros(event: EventToRoute, not_stored: NotFound) -> RouteResult:
    """A batch's event that is not stored answers zeros: its claim wrote nothing, so the batch's transaction stays
    good for the others (anything raised after a claim fails it, and `route_events` routes one by one)."""
    _log.warning("event to route is not stored", event_id=str(event.event_id), tenant_id=str(event.tenant_id))
    return RouteResult(0, 0, ())


async def resume_from_recent_events(rt: Runtime, armed: Sequence[ArmedEventWait]) -> Effects:
    """The lookback rule (module docstring): resume freshly armed event waits with events that came just before."""
    effects = Effects()
    for wait, candidates in zip(armed, await _recent_events(rt, armed), strict=True):
        for event_id, data in candidates:
            async with rt.transaction(effects) as conn:
                outcome = await resume_in(
                    rt,
                    conn,
                    ResumeRequest(wait.instance_id, wait.wait_id, "event", data, event_id=event_id),
                    effects,
                    now=rt.now(),
                )
            if outcome.applied:
                _log.info("event wait resumed by lookback", wait_id=str(wait.wait_id), event_id=str(event_id))
            if outcome.reason != "filter_not_matched":
                break
    return effects


async def _recent_events(rt: Runtime, armed: Sequence[ArmedEventWait]) -> list[list[tuple[uuid.UUID, dict[str, Any]]]]:
    """Each wait's lookback candidates, read in one statement on a pooled connection outside any transaction (a
    read needs none: no BEGIN and ROLLBACK around it)."""
    lookbacks = [
        Lookback(wait.tenant_id, wait.participant_id, wait.event_type, wait.since, wait.instance_id) for wait in armed
    ]
    async with rt.db.connect() as conn:
        reading = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await recent_events(reading, lookbacks, limit=LOOKBACK_LIMIT)
