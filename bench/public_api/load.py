"""What the load process sends to the public API (grpc.aio, one channel, as a client elsewhere would).

Each function runs in the `LoadProcess` (see bench/loadgen.py): module-level, plain arguments, a picklable result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from kalcifer.v1 import event_pb2, event_pb2_grpc, trigger_pb2, trigger_pb2_grpc

from bench.loadgen import ClosedLoopResult, OpenLoopResult, closed_loop, open_loop

# Deadline of every call: far beyond any latency we report, so a slow answer counts as slow, not as an error.
CALL_TIMEOUT_SECONDS = 60.0


def _auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def trigger_flows(address: str, key: str, starts: Sequence[tuple[str, str, str]], concurrency: int) -> ClosedLoopResult:
    """TriggerFlow for each (flow_id, entry_node_id or "", participant_id), `concurrency` in flight."""
    return asyncio.run(_trigger_flows(address, key, starts, concurrency))


async def _trigger_flows(
    address: str, key: str, starts: Sequence[tuple[str, str, str]], concurrency: int
) -> ClosedLoopResult:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = trigger_pb2_grpc.TriggerServiceStub(channel)
        auth = _auth(key)

        async def call(index: int) -> None:
            flow_id, entry, participant = starts[index]
            request = trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id=participant)
            if entry:
                request.entry_node_id = entry
            await stub.TriggerFlow(request, metadata=auth, timeout=CALL_TIMEOUT_SECONDS)

        return await closed_loop(len(starts), concurrency, call)


async def _ingest(
    stub: event_pb2_grpc.EventServiceAsyncStub, auth: tuple[tuple[str, str]], participant_id: str, event_type: str
) -> int:
    """One IngestEvent; how many instances it resumed."""
    answer = await stub.IngestEvent(
        event_pb2.IngestEventRequest(participant_id=participant_id, event_type=event_type),
        metadata=auth,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return int(answer.resumed)


def ingest_events(address: str, key: str, participants: Sequence[str], event_type: str, rate: float) -> OpenLoopResult:
    """IngestEvent `event_type` for each participant, open loop at `rate` a second; each must resume one instance."""
    return asyncio.run(_ingest_events(address, key, participants, event_type, rate))


async def _ingest_events(
    address: str, key: str, participants: Sequence[str], event_type: str, rate: float
) -> OpenLoopResult:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = event_pb2_grpc.EventServiceStub(channel)
        auth = _auth(key)

        async def call(index: int) -> str | None:
            resumed = await _ingest(stub, auth, participants[index], event_type)
            return None if resumed == 1 else f"resumed {resumed}"

        return await open_loop(len(participants), rate, call)


def ingest_events_closed(
    address: str, key: str, participants: Sequence[str], event_type: str, concurrency: int
) -> ClosedLoopResult:
    """IngestEvent `event_type` for each participant, `concurrency` in flight: the rate the suite sustains."""
    return asyncio.run(_ingest_events_closed(address, key, participants, event_type, concurrency))


async def _ingest_events_closed(
    address: str, key: str, participants: Sequence[str], event_type: str, concurrency: int
) -> ClosedLoopResult:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = event_pb2_grpc.EventServiceStub(channel)
        auth = _auth(key)

        async def call(index: int) -> None:
            resumed = await _ingest(stub, auth, participants[index], event_type)
            if resumed != 1:
                raise LookupError(f"resumed {resumed}")

        return await closed_loop(len(participants), concurrency, call)
