"""Delivery governance through the public gRPC API (SPEC 7): one frequency cap across journeys, opted-out
customers, quiet hours and exit criteria, observed as a user observes them: instances and their steps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    journey_pb2,
    journey_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite
from tests.support.tenants import new_tenant

WAITING, EXITED = instance_pb2.INSTANCE_STATUS_WAITING, instance_pb2.INSTANCE_STATUS_EXITED


class Marketer:
    """One tenant's stubs."""

    def __init__(self, suite: Suite, channel: grpc.Channel) -> None:
        self.auth = new_tenant(suite, f"gov-{uuid.uuid4().hex[:6]}").auth
        template_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(id="welcome", channel="email", subject="Hi", body="Hello")
            ),
            metadata=self.auth,
        )
        self.flows = flow_pb2_grpc.FlowServiceStub(channel)
        self.journeys = journey_pb2_grpc.JourneyServiceStub(channel)
        self.customers = customer_pb2_grpc.CustomerServiceStub(channel)
        self.triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
        self.events = event_pb2_grpc.EventServiceStub(channel)
        self.instances = instance_pb2_grpc.InstanceServiceStub(channel)

    def launched_journey(self, **settings: Any) -> str:
        """A journey around `go -> mail (send_email) -> hold (wait 1h) -> end`, launched; returns its flow id."""
        nodes = [
            ("go", "event_entry", {"event_type": "go"}),
            ("mail", "send_email", {"template_id": "welcome"}),
            ("hold", "wait", {"duration": "1h"}),
            ("end", "exit", {}),
        ]
        graph = flow_pb2.FlowGraph(
            nodes=[flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in nodes],
            edges=[
                flow_pb2.GraphEdge(source=s, target=t) for s, t in [("go", "mail"), ("mail", "hold"), ("hold", "end")]
            ],
        )
        flow = self.flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=f"f-{uuid.uuid4().hex[:6]}"), graph=graph),
            metadata=self.auth,
        )
        journey = self.journeys.CreateJourney(
            journey_pb2.CreateJourneyRequest(journey=journey_pb2.Journey(name="j", flow_id=flow.id, **settings)),
            metadata=self.auth,
        )
        self.journeys.LaunchJourney(journey_pb2.LaunchJourneyRequest(id=journey.id), metadata=self.auth)
        flow_id: str = flow.id
        return flow_id

    def customer(self, external_id: str, **fields: Any) -> None:
        self.customers.UpsertCustomer(
            customer_pb2.UpsertCustomerRequest(customer=customer_pb2.Customer(external_id=external_id, **fields)),
            metadata=self.auth,
        )

    def enter(self, flow_id: str, participant: str) -> str:
        """Start `participant` in the flow and wait until the run parked (WAITING)."""
        started = self.triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id=participant), metadata=self.auth
        )
        self.status(started.instance_id, WAITING)
        instance_id: str = started.instance_id
        return instance_id

    def status(self, instance_id: str, wanted: int) -> instance_pb2.FlowInstance:
        return eventually_sync(
            lambda: self.instances.GetInstance(instance_pb2.GetInstanceRequest(id=instance_id), metadata=self.auth),
            until=lambda found: found.status == wanted,
            within=15,
            interval=0.1,
            what=f"instance {instance_id} in status {wanted}",
        )

    def step(self, instance_id: str, node_id: str) -> dict[str, Any]:
        listed = self.instances.ListExecutionSteps(
            instance_pb2.ListExecutionStepsRequest(instance_id=instance_id), metadata=self.auth
        )
        [step] = [s for s in listed.steps if s.node_id == node_id]
        return MessageToDict(step, preserving_proto_field_name=True)


def test_a_cap_of_two_emails_a_day_across_three_journeys_skips_the_third_and_the_path_goes_on(
    suite: Suite, channel: grpc.Channel
) -> None:
    marketer = Marketer(suite, channel)
    marketer.customer("ada", email="ada@example.com")
    cap = journey_pb2.FrequencyCap(max_messages=2, time_window="1d", channel="email")
    flows = [marketer.launched_journey(frequency_cap=cap) for _ in range(3)]

    entered = [marketer.enter(flow_id, "ada") for flow_id in flows]

    sent = [marketer.step(instance_id, "mail") for instance_id in entered[:2]]
    assert [step["status"] for step in sent] == ["STEP_STATUS_COMPLETED"] * 2
    capped = marketer.step(entered[2], "mail")
    assert capped["status"] == "STEP_STATUS_SKIPPED"
    assert capped["output"] == {"skipped": "FREQUENCY_CAPPED", "count": 2, "max_messages": 2}
    assert marketer.step(entered[2], "hold")["status"] == "STEP_STATUS_WAITING"  # the path went on


def test_a_customer_who_opted_out_of_email_is_skipped_preference_off(suite: Suite, channel: grpc.Channel) -> None:
    marketer = Marketer(suite, channel)
    marketer.customer("bob", email="bob@example.com")
    marketer.customers.SetCustomerPreferences(
        customer_pb2.SetCustomerPreferencesRequest(external_id="bob", channels={"email": False}), metadata=marketer.auth
    )
    flow_id = marketer.launched_journey()

    step = marketer.step(marketer.enter(flow_id, "bob"), "mail")

    assert step["status"] == "STEP_STATUS_SKIPPED"
    assert step["output"] == {"skipped": "PREFERENCE_OFF", "channel": "email"}


def test_a_send_in_quiet_hours_is_deferred_to_their_end(suite: Suite, channel: grpc.Channel) -> None:
    marketer = Marketer(suite, channel)
    marketer.customer("cy", email="cy@example.com")
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=2)).strftime("%H:%M")
    flow_id = marketer.launched_journey(quiet_hours=journey_pb2.QuietHours(start=start, end=end, timezone="UTC"))

    step = marketer.step(marketer.enter(flow_id, "cy"), "mail")

    deferred = datetime.fromisoformat(step["output"]["deferred_until"])
    assert step["status"] == "STEP_STATUS_COMPLETED"
    assert deferred.strftime("%H:%M") == end
    assert now < deferred <= now + timedelta(hours=2)


def test_an_exit_criterion_event_exits_the_participants_instance_of_that_journey_only(
    suite: Suite, channel: grpc.Channel
) -> None:
    marketer = Marketer(suite, channel)
    marketer.customer("dee", email="dee@example.com")
    leaving = marketer.launched_journey(exit_criteria=[journey_pb2.ExitCriterion(event_type="unsubscribed")])
    staying = marketer.launched_journey()
    left, kept = marketer.enter(leaving, "dee"), marketer.enter(staying, "dee")

    marketer.events.IngestEvent(
        event_pb2.IngestEventRequest(participant_id="dee", event_type="unsubscribed"), metadata=marketer.auth
    )

    exited = marketer.status(left, EXITED)
    assert exited.exit_reason == "exit_criterion:unsubscribed"
    assert marketer.step(left, "hold")["status"] == "STEP_STATUS_CANCELLED"
    assert (
        marketer.instances.GetInstance(instance_pb2.GetInstanceRequest(id=kept), metadata=marketer.auth).status
        == WAITING
    )
