"""Per-tenant rate limits under a flood (SPEC 10): tenant B's TriggerFlow latency while tenant A floods the API.

The three services run as processes on the bench's scratch servers with a budget of 50 calls/s per tenant. B
starts one instance every 25 ms (40/s, inside its budget) and we take B's latencies: alone (the baseline), then
while two processes of tenant A (at the lowest CPU priority: on this one machine they stand for clients elsewhere)
flood TriggerFlow far over A's budget, ignoring RetryInfo: each calling back to back, then each keeping 64, then
128 calls in flight. A is answered RESOURCE_EXHAUSTED `RATE_LIMITED` before its requests are read: up to
RATE_LIMIT_MAX_HELD of its calls held until their retry time, the rest at once. Reported: B's p50 and p99 under
each flood next to alone; the target is a p99 ratio within 2.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, trigger_pb2, trigger_pb2_grpc
from kalcifer_common.structs import dict_to_struct

from bench.harness import BenchEnv, Comparison, percentile
from tests.support.processes import Suite, running_suite
from tests.support.tenants import Tenant, new_tenant

RATE = 50
B_CALLS = 300
B_SPACING_SECONDS = 0.025
FLOOD_PROCESSES = 2
# Calls each flooding process keeps in flight: one (back to back); 64 (128 in all: every refused call is held, as
# the replica holds up to 200 of a tenant's); 128 (256 in all: beyond what is held, so part of the flood is refused
# at once, in a tight loop).
FLOOD_SHAPES = (1, 64, 128)
GRAPH = flow_pb2.FlowGraph(
    nodes=[
        flow_pb2.GraphNode(id="go", type="event_entry", config=dict_to_struct({"event_type": "go"})),
        flow_pb2.GraphNode(id="hold", type="wait", config=dict_to_struct({"duration": "1h"})),
    ],
    edges=[flow_pb2.GraphEdge(source="go", target="hold")],
)


def _active_flow(channel: grpc.Channel, auth: tuple[tuple[str, str]]) -> str:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    created = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="bench"), graph=GRAPH), metadata=auth)
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=auth)
    flow_id: str = created.id
    return flow_id


def _paced_latencies(channel: grpc.Channel, auth: tuple[tuple[str, str]], flow_id: str) -> list[float]:
    triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
    latencies: list[float] = []
    next_at = time.monotonic()
    for _ in range(B_CALLS):
        began = time.monotonic()
        triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id=f"b-{uuid.uuid4().hex}"), metadata=auth
        )
        latencies.append((time.monotonic() - began) * 1000)
        # Never catch up with a burst after a slow call: B stays a 40/s client, inside its own budget.
        next_at = max(next_at + B_SPACING_SECONDS, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    return latencies


def _flood(address: str, auth: tuple[tuple[str, str]], flow_id: str, in_flight: int, until: float, counts: Any) -> None:
    """One flooding process: its own interpreter, at the lowest CPU priority, so on this one machine the attacker's
    own client (which in production runs elsewhere) does not take the cores the services need; `in_flight` calls
    at once, each followed at once by the next, whatever the answer (RetryInfo ignored)."""
    os.nice(19)
    asyncio.run(_flood_async(address, auth, flow_id, in_flight, until, counts))


async def _flood_async(
    address: str, auth: tuple[tuple[str, str]], flow_id: str, in_flight: int, until: float, counts: Any
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        triggers = trigger_pb2_grpc.TriggerServiceStub(channel)

        async def caller() -> None:
            while time.time() < until:
                try:
                    await triggers.TriggerFlow(
                        trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id=f"a-{uuid.uuid4().hex}"),
                        metadata=auth,
                    )
                    index = 0
                except grpc.RpcError as error:
                    index = 1 if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else 2
                with counts.get_lock():
                    counts[index] += 1

        await asyncio.gather(*(caller() for _ in range(in_flight)))


def _flooded(
    suite: Suite, channel: grpc.Channel, a: Tenant, a_flow: str, b: Tenant, b_flow: str, in_flight: int
) -> tuple[list[float], list[int]]:
    """B's latencies while A floods with `in_flight` calls per process; A's admitted, refused and other counts."""
    context = multiprocessing.get_context("spawn")
    counts = context.Array("q", 3)
    until = time.time() + 2 + B_CALLS * B_SPACING_SECONDS * 1.5
    flooders = [
        context.Process(target=_flood, args=(suite.address("api"), a.auth, a_flow, in_flight, until, counts))
        for _ in range(FLOOD_PROCESSES)
    ]
    for process in flooders:
        process.start()
    time.sleep(2)  # let the flood reach its pace before B is measured
    latencies = _paced_latencies(channel, b.auth, b_flow)
    for process in flooders:
        process.join()
    return latencies, [int(counts[i]) for i in range(3)]


def _measure(suite: Suite) -> tuple[list[float], dict[int, tuple[list[float], list[int]]]]:
    a, b = new_tenant(suite, "flooder"), new_tenant(suite, "neighbour")
    with grpc.insecure_channel(suite.address("api")) as channel:
        a_flow, b_flow = _active_flow(channel, a.auth), _active_flow(channel, b.auth)
        _paced_latencies(channel, b.auth, b_flow)  # warm-up: connections, caches
        alone = _paced_latencies(channel, b.auth, b_flow)
        floods = {shape: _flooded(suite, channel, a, a_flow, b, b_flow, shape) for shape in FLOOD_SHAPES}
    return alone, floods


async def run(env: BenchEnv) -> list[Comparison]:
    """B's TriggerFlow p50/p99 while A floods (each flood shape), next to B alone, in the same run."""
    settings = {"RATE_LIMIT_PER_SECOND": str(RATE), "RATE_LIMIT_BURST": str(RATE), "LOG_LEVEL": "WARNING"}
    log_dir = Path(env.work_dir) / "rate-limit-logs"

    def measure() -> tuple[list[float], dict[int, tuple[list[float], list[int]]]]:
        with running_suite(env.database_url, env.redis_url, log_dir, settings) as suite:
            return _measure(suite)

    alone, floods = await asyncio.to_thread(measure)
    comparisons: list[Comparison] = []
    for in_flight, (flooded, counts) in floods.items():
        extra: dict[str, float | int | str] = {
            "a_admitted": counts[0],
            "a_rate_limited": counts[1],
            "a_other": counts[2],
        }
        for quantile in (50, 99):
            comparisons.append(
                Comparison(
                    f"tenant B TriggerFlow p{quantile}, A flooding ({FLOOD_PROCESSES}x{in_flight} in flight)",
                    "ms",
                    percentile(flooded, quantile),
                    percentile(alone, quantile),
                    "B alone",
                    higher_is_better=False,
                    extra=extra,
                )
            )
    return comparisons
