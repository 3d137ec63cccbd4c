"""The flows the public-API benchmark drives, created and activated through FlowService as a tenant would.

- `event_wait_graph`: trigger -> `wait_for_event ping` (timeout a week) -> exit. TriggerFlow runs it to its
  first wait (two steps and a wait row committed); IngestEvent `ping` resumes it to the end.
- `timer_graph`: `count` pairs of trigger `goN` -> `wait_until` a fixed moment. A graph fixes its moments, so a
  schedule of many fire times is spread over several flows of many entry nodes, and TriggerFlow picks the pair
  with `entry_node_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import grpc
from kalcifer.v1 import flow_pb2, flow_pb2_grpc
from kalcifer_common.structs import dict_to_struct

TRIGGER_EVENT = "bench-go"
RESUME_EVENT = "ping"
TIMER_TRIGGER_EVENT = "bench-timer-go"
# A graph may hold 500 nodes: 200 trigger + wait_until pairs stay well inside.
TIMER_PAIRS_PER_FLOW = 200


def _node(node_id: str, node_type: str, config: dict[str, str]) -> flow_pb2.GraphNode:
    return flow_pb2.GraphNode(id=node_id, type=node_type, config=dict_to_struct(config))


def event_wait_graph() -> flow_pb2.FlowGraph:
    """trigger -> wait_for_event `ping` -> exit (either branch)."""
    return flow_pb2.FlowGraph(
        nodes=[
            _node("go", "event_entry", {"event_type": TRIGGER_EVENT}),
            _node("hold", "wait_for_event", {"event_type": RESUME_EVENT, "timeout": "7d"}),
            _node("received", "exit", {}),
            _node("gave_up", "exit", {}),
        ],
        edges=[
            flow_pb2.GraphEdge(source="go", target="hold"),
            flow_pb2.GraphEdge(source="hold", target="received", branch="event_received"),
            flow_pb2.GraphEdge(source="hold", target="gave_up", branch="timed_out"),
        ],
    )


def timer_entry(pair: int) -> str:
    """The entry node of pair `pair` of a timer graph."""
    return f"go{pair}"


def timer_graph(fire_times: Sequence[datetime]) -> flow_pb2.FlowGraph:
    """One trigger -> wait_until pair per fire time (pair i waits until fire_times[i])."""
    nodes: list[flow_pb2.GraphNode] = []
    edges: list[flow_pb2.GraphEdge] = []
    for pair, moment in enumerate(fire_times):
        nodes.append(_node(timer_entry(pair), "event_entry", {"event_type": TIMER_TRIGGER_EVENT}))
        nodes.append(_node(f"at{pair}", "wait_until", {"datetime": moment.isoformat()}))
        edges.append(flow_pb2.GraphEdge(source=timer_entry(pair), target=f"at{pair}"))
    return flow_pb2.FlowGraph(nodes=nodes, edges=edges)


async def active_flow(
    channel: grpc.aio.Channel, auth: tuple[tuple[str, str]], name: str, graph: flow_pb2.FlowGraph
) -> str:
    """Create the flow with `graph` and activate it; its id."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    created = await flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name), graph=graph), metadata=auth, timeout=60
    )
    await flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=auth, timeout=60)
    flow_id: str = created.id
    return flow_id
