"""Hostile CEL through the public API, on the real services: what can be refused is refused at write time; what
only data makes expensive fails its own step, while the engine stays SERVING and other tenants carry on."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer.v1 import (
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.processes import Suite
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

TEN = "[1,2,3,4,5,6,7,8,9,10]"
BOMBS = {
    "40KB of additions": "+".join(["1"] * 20_000),
    "six nested maps": f"{TEN}.map(a,{TEN}.map(b,{TEN}.map(c,{TEN}.map(d,{TEN}.map(e,{TEN}.map(f,{TEN}))))))",
}
DATA_DEPENDENT = "items.map(a, items.map(b, items)).size()"


def _graph(expression: str) -> flow_pb2.FlowGraph:
    return flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="go", type="event_entry", config=dict_to_struct({"event_type": "go"})),
            flow_pb2.GraphNode(id="calc", type="custom_code", config=dict_to_struct({"expression": expression})),
        ],
        edges=[flow_pb2.GraphEdge(source="go", target="calc")],
    )


def _active_flow(channel: grpc.Channel, auth: tuple[tuple[str, str]], expression: str) -> str:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    created = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=f"f-{uuid.uuid4().hex[:6]}"), graph=_graph(expression)),
        metadata=auth,
    )
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=auth)
    flow_id: str = created.id
    return flow_id


@pytest.mark.parametrize("bomb", list(BOMBS), ids=list(BOMBS))
def test_the_known_bombs_are_refused_at_write_time_naming_their_field(
    suite: Suite, channel: grpc.Channel, bomb: str
) -> None:
    auth = new_tenant(suite, "bomber").auth
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    error = rpc_error(
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="bomb"), graph=_graph(BOMBS[bomb])), metadata=auth
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = field_violations(error).items()
    assert field == "nodes[1].config.expression"  # the custom_code node, "calc"
    assert ("characters" in description) or ("comprehension macros" in description)
    assert list(flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=auth).flows) == []


def test_a_data_dependent_runaway_fails_its_step_while_another_tenant_completes(
    suite: Suite, channel: grpc.Channel
) -> None:
    attacker, bystander = new_tenant(suite, "attacker").auth, new_tenant(suite, "bystander").auth
    bomb = _active_flow(channel, attacker, DATA_DEPENDENT)
    fine = _active_flow(channel, bystander, "n * 2")
    triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
    instances = instance_pb2_grpc.InstanceServiceStub(channel)

    def trigger(flow_id: str, auth: tuple[tuple[str, str]], participant: str, context: dict[str, object]) -> str:
        request = trigger_pb2.TriggerFlowRequest(
            flow_id=flow_id, participant_id=participant, context=dict_to_struct(context)
        )
        instance_id: str = triggers.TriggerFlow(request, metadata=auth).instance_id
        return instance_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        bombs = [pool.submit(trigger, bomb, attacker, f"a{n}", {"items": list(range(2_000))}) for n in range(4)]
        calm = [trigger(fine, bystander, f"b{n}", {"n": n}) for n in range(20)]
        bombed = [future.result() for future in bombs]

    def get(instance_id: str, auth: tuple[tuple[str, str]]) -> instance_pb2.FlowInstance:
        return instances.GetInstance(instance_pb2.GetInstanceRequest(id=instance_id), metadata=auth)

    assert [get(i, bystander).status for i in calm] == [instance_pb2.INSTANCE_STATUS_COMPLETED] * 20
    for instance_id in bombed:
        failed = get(instance_id, attacker)
        assert failed.status == instance_pb2.INSTANCE_STATUS_FAILED
        assert failed.exit_reason.endswith("custom_code expression failed: ran longer than its budget of 250 ms")
    with grpc.insecure_channel(suite.address("engine")) as engine:
        health = health_pb2_grpc.HealthStub(engine).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert suite.processes["engine"].poll() is None  # the same engine process, never restarted
