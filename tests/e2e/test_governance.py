"""Delivery governance through the public gRPC API (SPEC 7): one frequency cap across journeys, opted-out
customers, quiet hours (in the customer's timezone too), exit criteria and goals, observed as a user observes
them: instances and their steps, deliveries, analytics, and the scheduler's armed timers on its /metrics."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from kalcifer.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
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
from prometheus_client.parser import text_string_to_metric_families

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, scratch_suite
from tests.support.tenants import new_tenant

WAITING, EXITED = instance_pb2.INSTANCE_STATUS_WAITING, instance_pb2.INSTANCE_STATUS_EXITED
Nodes = list[tuple[str, str, dict[str, Any]]]
Edges = list[tuple[str, str, str]]

# `go -> mail (send_email) -> hold (wait 1h) -> end`: a send, then a timer.
MAIL_THEN_HOLD: tuple[Nodes, Edges] = (
    [
        ("go", "event_entry", {"event_type": "go"}),
        ("mail", "send_email", {"template_id": "welcome"}),
        ("hold", "wait", {"duration": "1h"}),
        ("end", "exit", {}),
    ],
    [("go", "mail", ""), ("mail", "hold", ""), ("hold", "end", "")],
)
# `go -> split (ab_split, one variant "all") -> hold (wait 1h)`: every participant is assigned, then waits.
SPLIT_THEN_HOLD: tuple[Nodes, Edges] = (
    [
        ("go", "event_entry", {"event_type": "go"}),
        ("split", "ab_split", {"variants": [{"key": "all", "weight": 1}]}),
        ("hold", "wait", {"duration": "1h"}),
    ],
    [("go", "split", ""), ("split", "hold", "all")],
)


@pytest.fixture(scope="module")
def long_horizon(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """A suite of its own whose scheduler arms timers due within two hours in Redis (the default horizon is a
    minute: a 1 h timer would not be armed yet) and whose gauges refresh often, so its /metrics
    `kalcifer_scheduler_armed_timers` counts this module's timers only."""
    settings = {"TIMER_HORIZON_SECONDS": "7200", "METRICS_REFRESH_SECONDS": "0.2"}
    with scratch_suite(servers, tmp_path_factory.mktemp("governance-timers-logs"), settings) as running:
        yield running


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
        self.deliveries = delivery_pb2_grpc.DeliveryServiceStub(channel)
        self.analytics = analytics_pb2_grpc.AnalyticsServiceStub(channel)

    def launched_journey(self, shape: tuple[Nodes, Edges] = MAIL_THEN_HOLD, **settings: Any) -> str:
        """A journey around a flow of this shape (`MAIL_THEN_HOLD` by default), launched; returns its flow id."""
        nodes, edges = shape
        graph = flow_pb2.FlowGraph(
            nodes=[flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in nodes],
            edges=[flow_pb2.GraphEdge(source=s, target=t, branch=b) for s, t, b in edges],
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


def test_a_send_in_the_customers_quiet_hours_in_berlin_is_deferred_to_their_end_in_berlin(
    suite: Suite, channel: grpc.Channel
) -> None:
    marketer = Marketer(suite, channel)
    berlin = ZoneInfo("Europe/Berlin")
    marketer.customer("eda", email="eda@example.com", timezone="Europe/Berlin")
    now = datetime.now(UTC)
    # A window around the wall-clock time in Berlin now: from an hour ago to two hours ahead.
    start, end = ((now + timedelta(hours=hours)).astimezone(berlin) for hours in (-1, 2))
    quiet = journey_pb2.QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}")  # no timezone: the customer's
    flow_id = marketer.launched_journey(quiet_hours=quiet)

    instance_id = marketer.enter(flow_id, "eda")

    window_end = end.replace(second=0, microsecond=0).astimezone(UTC)  # HH:MM in Berlin, in UTC
    listed = marketer.deliveries.ListDeliveries(
        delivery_pb2.ListDeliveriesRequest(instance_id=instance_id), metadata=marketer.auth
    )
    [delivery] = listed.deliveries
    assert delivery.send_after.ToDatetime(tzinfo=UTC) == window_end
    assert delivery.status == delivery_pb2.DELIVERY_STATUS_PENDING
    step = marketer.step(instance_id, "mail")
    assert step["status"] == "STEP_STATUS_COMPLETED"
    assert datetime.fromisoformat(step["output"]["deferred_until"]) == window_end


def armed_timers(suite: Suite) -> float:
    """`kalcifer_scheduler_armed_timers` on the scheduler's /metrics, scraped as Prometheus scrapes it."""
    with urllib.request.urlopen(suite.metrics_url("scheduler"), timeout=10) as answer:
        text = answer.read().decode()
    [gauge] = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kalcifer_scheduler_armed_timers"
    ]
    return gauge


def test_an_exit_criterion_event_exits_the_participants_instance_of_that_journey_only_and_cancels_its_timer(
    long_horizon: Suite,
) -> None:
    with grpc.insecure_channel(long_horizon.address("api")) as channel:
        marketer = Marketer(long_horizon, channel)
        marketer.customer("dee", email="dee@example.com")
        leaving = marketer.launched_journey(exit_criteria=[journey_pb2.ExitCriterion(event_type="unsubscribed")])
        staying = marketer.launched_journey()
        left, kept = marketer.enter(leaving, "dee"), marketer.enter(staying, "dee")
        eventually_sync(
            lambda: armed_timers(long_horizon),
            until=lambda armed: armed == 2,
            within=15,
            what="both 1 h timers armed in the scheduler's Redis",
        )

        marketer.events.IngestEvent(
            event_pb2.IngestEventRequest(participant_id="dee", event_type="unsubscribed"), metadata=marketer.auth
        )

        exited = marketer.status(left, EXITED)
        assert exited.exit_reason == "exit_criterion:unsubscribed"
        assert marketer.step(left, "hold")["status"] == "STEP_STATUS_CANCELLED"
        eventually_sync(
            lambda: armed_timers(long_horizon),
            until=lambda armed: armed == 1,
            within=15,
            what="the exited instance's timer cancelled in the scheduler, the other one still armed",
        )
        assert (
            marketer.instances.GetInstance(instance_pb2.GetInstanceRequest(id=kept), metadata=marketer.auth).status
            == WAITING
        )
        assert marketer.step(kept, "hold")["status"] == "STEP_STATUS_WAITING"


def test_goal_events_record_one_conversion_per_instance_however_many_arrive(
    suite: Suite, channel: grpc.Channel
) -> None:
    marketer = Marketer(suite, channel)
    flow_id = marketer.launched_journey(SPLIT_THEN_HOLD, goals=[journey_pb2.Goal(name="purchase", event_type="order")])
    for participant in ("ann", "bob", "cy"):
        marketer.enter(flow_id, participant)

    for participant, revenue in [("ann", 10), ("ann", 10), ("ann", 10), ("bob", 5)]:  # cy orders nothing
        marketer.events.IngestEvent(
            event_pb2.IngestEventRequest(
                participant_id=participant, event_type="order", data=dict_to_struct({"revenue": revenue})
            ),
            metadata=marketer.auth,
        )

    summary = marketer.analytics.GetFlowSummary(
        analytics_pb2.GetFlowSummaryRequest(flow_id=flow_id), metadata=marketer.auth
    )
    assert (summary.entered, summary.waiting, summary.converted) == (3, 3, 2)  # a goal does not end the instance
    assert summary.conversion_rate == pytest.approx(2 / 3)
    ab = marketer.analytics.GetAbResults(
        analytics_pb2.GetAbResultsRequest(flow_id=flow_id, node_id="split"), metadata=marketer.auth
    )
    [variant] = ab.variants
    assert (variant.key, variant.participants, variant.conversions) == ("all", 3, 2)
    # The revenue sums every conversion recorded: ann's first order and bob's, so two conversions, not four.
    assert variant.revenue == pytest.approx(15)
