"""The chaos workload, driven through the public API as a tenant would: start participants at a steady rate, and
send each `journey` participant its `confirm` event once its wait for it is armed.

Every call is retried under the same request id until the API answers (faults make it UNAVAILABLE for a while),
so a start or an event is never sent twice with different ids: a second instance or a second routing would be a
duplicate made by Kalcifer, not by the driver. What failed and was retried is counted per phase and status code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import asyncpg
import grpc
from kalcifer.v1 import event_pb2, event_pb2_grpc, trigger_pb2, trigger_pb2_grpc

from tests.chaos.flows import CONFIRM_EVENT, ORDER_EVENT, FlowKind
from tests.chaos.verdict import Started

# What the API may answer while a service, Redis or PostgreSQL is gone: worth another try under the same id.
RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
CALL_TIMEOUT_SECONDS: Final = 5.0
RETRY_DELAY_SECONDS: Final = 0.3
# A call still failing after this long is given up and reported: the suite did not recover.
GIVE_UP_SECONDS: Final = 90.0
CONFIRM_POLL_SECONDS: Final = 0.4
CONFIRM_BATCH: Final = 100
# The order in which starts cycle through the flows: 2 journeys, 2 orders, 1 silent in every 5.
START_CYCLE: Final = (FlowKind.JOURNEY, FlowKind.ORDER, FlowKind.JOURNEY, FlowKind.ORDER, FlowKind.SILENT)

# Participants whose `confirm` wait is armed: the driver sends the event only then, so the graph dictates
# `event_received` for every journey (an event sent earlier than the lookback could legitimately be missed).
_CONFIRM_WAITING = """
    SELECT DISTINCT i.participant_id FROM waits w JOIN flow_instances i ON i.id = w.instance_id
    WHERE w.tenant_id = $1 AND w.status = 'pending' AND w.kind = 'event' AND w.event_type = $2
"""

# Grants channels to restarted services quickly: gRPC's default reconnect backoff grows to minutes.
CHANNEL_OPTIONS: Final = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


@dataclass
class Phases:
    """Which phase the run is in: 0 before the first fault, n after the n-th."""

    current: int = 0


@dataclass
class CallRecord:
    """API calls that failed and were retried, by (phase, status code); calls given up, with why."""

    retried: Counter[tuple[int, str]] = field(default_factory=Counter)
    given_up: list[str] = field(default_factory=list)


class Workload:
    """Starts participants and confirms journeys through one tenant's API key."""

    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        auth: tuple[tuple[str, str]],
        flow_ids: dict[FlowKind, str],
        pool: asyncpg.Pool,
        tenant_id: str,
        phases: Phases,
    ) -> None:
        self._triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
        self._events = event_pb2_grpc.EventServiceStub(channel)
        self._auth = auth
        self._flow_ids = flow_ids
        self._pool = pool
        self._tenant_id = tenant_id
        self._phases = phases
        self.started: dict[str, Started] = {}
        self.events_sent: set[str] = set()
        self.events_acknowledged: set[str] = set()
        self.calls = CallRecord()

    async def start_participants(self, *, rate: float, seconds: float) -> None:
        """Start `rate` participants a second for `seconds`, cycling through the flows; returns once every start
        was answered (or given up)."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks: list[asyncio.Task[None]] = []
        number = 0
        while (now := loop.time()) < begin + seconds:
            kind = START_CYCLE[number % len(START_CYCLE)]
            participant = f"{kind}-{number:05d}"
            tasks.append(asyncio.create_task(self._start(participant, kind)))
            number += 1
            await asyncio.sleep(max(0.0, begin + number / rate - now))
        await asyncio.gather(*tasks)

    async def confirm_waiting(self, stop: asyncio.Event) -> None:
        """Until `stop`: send `confirm` to every journey participant whose wait for it is armed (again each poll
        while it stays armed and unacknowledged, under the same request id)."""
        while not stop.is_set():
            try:
                async with self._pool.acquire(timeout=2) as connection:
                    rows = await connection.fetch(_CONFIRM_WAITING, self._tenant_id, CONFIRM_EVENT, timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                rows = []  # PostgreSQL is restarting: the next poll sees the waits again
            todo = [row[0] for row in rows if f"confirm-{row[0]}" not in self.events_acknowledged]
            for first in range(0, len(todo), CONFIRM_BATCH):
                await self._confirm(todo[first : first + CONFIRM_BATCH])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONFIRM_POLL_SECONDS)

    async def _start(self, participant: str, kind: FlowKind) -> None:
        self.started[participant] = Started(participant, kind, self._phases.current, acknowledged=False)
        if kind is FlowKind.ORDER:
            request_id = f"order-{participant}"
            self.events_sent.add(request_id)
            event = event_pb2.IngestEventRequest(
                participant_id=participant, event_type=ORDER_EVENT, request_id=request_id
            )
            answered = await self._with_retries(
                lambda: self._events.IngestEvent(event, metadata=self._auth, timeout=CALL_TIMEOUT_SECONDS),
                f"order event of {participant}",
            )
            if answered:
                self.events_acknowledged.add(request_id)
        else:
            trigger = trigger_pb2.TriggerFlowRequest(
                flow_id=self._flow_ids[kind], participant_id=participant, request_id=f"start-{participant}"
            )
            answered = await self._with_retries(
                lambda: self._triggers.TriggerFlow(trigger, metadata=self._auth, timeout=CALL_TIMEOUT_SECONDS),
                f"start of {participant}",
            )
        if answered:
            self.started[participant] = Started(participant, kind, self.started[participant].phase, acknowledged=True)

    async def _confirm(self, participants: list[str]) -> None:
        ids = [f"confirm-{participant}" for participant in participants]
        batch = event_pb2.IngestEventsRequest(
            events=[
                event_pb2.IngestEventRequest(participant_id=participant, event_type=CONFIRM_EVENT, request_id=id_)
                for participant, id_ in zip(participants, ids, strict=True)
            ]
        )
        self.events_sent.update(ids)
        try:
            await self._events.IngestEvents(batch, metadata=self._auth, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            self.calls.retried[(self._phases.current, error.code().name)] += 1
            return  # the next poll sends them again, same ids
        self.events_acknowledged.update(ids)

    async def _with_retries(self, call: Callable[[], Awaitable[object]], what: str) -> bool:
        """Make `call` until it answers (True) or fails for good (False, recorded)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + GIVE_UP_SECONDS
        while True:
            try:
                await call()
                return True
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code not in RETRYABLE or loop.time() > give_up_at:
                    self.calls.given_up.append(f"{what}: {code.name} {error.details()}")
                    return False
                self.calls.retried[(self._phases.current, code.name)] += 1
            await asyncio.sleep(RETRY_DELAY_SECONDS)
