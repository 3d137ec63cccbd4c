"""Re-entry `NEVER` holds after the participant's old instance was pruned (issue 9), through the public gRPC API.

This module runs its own suite whose engine prunes finished instances three seconds after they end (the default
retention is 30 days) and looks for them twice a second, so the pruning a participant would otherwise re-enter
after happens during the test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import grpc
import pytest
from kalcifer.v1 import (
    common_pb2,
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, scratch_suite
from tests.support.rpc import code_of, reason_of, rpc_error
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pruning_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The three services on their own database and Redis db; finished instances pruned 3 s after they end."""
    settings = {"INSTANCE_RETENTION_SECONDS": "3", "RECOVERY_INTERVAL_SECONDS": "0.5"}
    with scratch_suite(servers, tmp_path_factory.mktemp("pruning-suite-logs"), settings) as suite:
        yield suite


def test_a_participant_of_a_never_flow_cannot_enter_again_after_their_instance_was_pruned(
    pruning_suite: Suite,
) -> None:
    auth = new_tenant(pruning_suite, "never-again").auth
    with grpc.insecure_channel(pruning_suite.address("api")) as channel:
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
        instances = instance_pb2_grpc.InstanceServiceStub(channel)
        graph = flow_pb2.FlowGraph(
            nodes=[
                flow_pb2.GraphNode(id="go", type="event_entry", config=dict_to_struct({"event_type": "go"})),
                flow_pb2.GraphNode(id="end", type="exit"),
            ],
            edges=[flow_pb2.GraphEdge(source="go", target="end")],
        )
        flow = flows.CreateFlow(
            flow_pb2.CreateFlowRequest(
                flow=flow_pb2.Flow(name="once in a lifetime", re_entry=common_pb2.RE_ENTRY_POLICY_NEVER), graph=graph
            ),
            metadata=auth,
        )
        flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)
        trigger = functools.partial(
            triggers.TriggerFlow, trigger_pb2.TriggerFlowRequest(flow_id=flow.id, participant_id="ann"), metadata=auth
        )
        get = functools.partial(
            instances.GetInstance, instance_pb2.GetInstanceRequest(id=trigger().instance_id), metadata=auth
        )
        eventually_sync(
            get,
            until=lambda found: found.status == instance_pb2.INSTANCE_STATUS_COMPLETED,
            within=15,
            interval=0.05,
            what="ann's instance completing (entry -> exit)",
        )
        refused = rpc_error(trigger)
        assert (refused.code(), reason_of(refused)) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_IN_FLOW")

        eventually_sync(
            lambda: code_of(get),
            until=lambda code: code == grpc.StatusCode.NOT_FOUND,
            within=30,
            interval=0.2,
            what="ann's finished instance pruned",
        )
        listed = instances.ListInstances(
            instance_pb2.ListInstancesRequest(flow_id=flow.id, participant_id="ann"), metadata=auth
        )
        assert list(listed.instances) == []

        refused_again = rpc_error(trigger)
        assert (refused_again.code(), reason_of(refused_again)) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_IN_FLOW")
        assert (
            instances.ListInstances(
                instance_pb2.ListInstancesRequest(flow_id=flow.id, participant_id="ann"), metadata=auth
            ).instances
            == []
        ), "no instance was started"
        newcomer = triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow.id, participant_id="bob"), metadata=auth
        )
        assert newcomer.instance_id, "the flow still takes participants who never entered"
