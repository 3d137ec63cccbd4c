"""`segment_entry` through the public gRPC API (issue 9): a customer who joins a segment (SegmentService) enters
its flow once; a change that keeps them a member does not start the flow again, even once their instance ended.

The scheduler follows segments once a minute (its `flow_triggers` cron, at second 37), so this test waits for two
of those runs: the first enters the first member; after the member's change a second customer joins, and their
entry proves a run read the customers changed after the first member's change (runs read customers in change
order).
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import struct_pb2
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

# Two runs of the once-a-minute cron, with room for a loaded machine.
A_RUN = 90.0


def test_a_customer_joining_a_segment_enters_its_flow_once_and_staying_a_member_enters_no_more(
    suite: Suite, channel: grpc.Channel
) -> None:
    auth = new_tenant(suite, f"segments-{uuid.uuid4().hex[:6]}").auth
    segments = segment_pb2_grpc.SegmentServiceStub(channel)
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    instances = instance_pb2_grpc.InstanceServiceStub(channel)
    gold = segments.CreateSegment(
        segment_pb2.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                name="gold",
                match=segment_pb2.SEGMENT_MATCH_ALL,
                rules=[
                    segment_pb2.SegmentRule(
                        field="attributes.tier", operator="eq", value=struct_pb2.Value(string_value="gold")
                    )
                ],
            )
        ),
        metadata=auth,
    )
    # segment_entry -> exit: an instance completes at once, so only the entry rule stands between a member and a
    # second instance (the default re-entry policy, AFTER_EXIT, would let them in again).
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="joined", type="segment_entry", config=dict_to_struct({"segment_id": gold.id})),
            flow_pb2.GraphNode(id="end", type="exit"),
        ],
        edges=[flow_pb2.GraphEdge(source="joined", target="end")],
    )
    flow = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="gold welcome"), graph=graph), metadata=auth
    )
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)

    def upsert(external_id: str, **attributes: object) -> None:
        customers.UpsertCustomer(
            customer_pb2.UpsertCustomerRequest(
                customer=customer_pb2.Customer(external_id=external_id, attributes=dict_to_struct(attributes))
            ),
            metadata=auth,
        )

    def instances_of(participant: str) -> list[instance_pb2.FlowInstance]:
        listed = instances.ListInstances(
            instance_pb2.ListInstancesRequest(flow_id=flow.id, participant_id=participant), metadata=auth
        )
        return list(listed.instances)

    upsert("ada", tier="silver")
    upsert("ada", tier="gold")  # joins

    [entered] = eventually_sync(
        lambda: instances_of("ada"),
        until=lambda found: len(found) == 1 and found[0].status == instance_pb2.INSTANCE_STATUS_COMPLETED,
        within=A_RUN,
        interval=0.5,
        what="ada's one instance, started by a segment-entry run and completed",
    )

    upsert("ada", tier="gold", city="Lyon")  # still a member
    upsert("bob", tier="gold")  # joins after ada's change

    eventually_sync(
        lambda: instances_of("bob"),
        until=lambda found: len(found) == 1,
        within=A_RUN,
        interval=0.5,
        what="bob's instance, started by a segment-entry run that read ada's change before bob's join",
    )
    assert [instance.id for instance in instances_of("ada")] == [entered.id], "staying a member enters no more"
