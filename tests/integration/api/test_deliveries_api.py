"""DeliveryService on the real suite: a flow's send_email makes a delivery that the scheduler renders and sends
(through `log`, the default), read back through GetDelivery and ListDeliveries; providers' reports move it only
forward; a template that does not render fails its delivery with the reason; tenants never see each other's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite
from tests.support.rpc import detail_of, field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

D = delivery_pb2
PENDING, SENT, DELIVERED, BOUNCED, FAILED = (
    D.DELIVERY_STATUS_PENDING,
    D.DELIVERY_STATUS_SENT,
    D.DELIVERY_STATUS_DELIVERED,
    D.DELIVERY_STATUS_BOUNCED,
    D.DELIVERY_STATUS_FAILED,
)


class Sender:
    """One tenant with a welcome email template and an active flow event_entry -> send_email."""

    def __init__(self, suite: Suite, channel: grpc.Channel, name: str, body: str) -> None:
        self.tenant: Tenant = new_tenant(suite, name)
        self.deliveries = delivery_pb2_grpc.DeliveryServiceStub(channel)
        self._triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
        self._customers = customer_pb2_grpc.CustomerServiceStub(channel)
        template_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    id="welcome", channel="email", subject="Welcome {{ customer.attributes.name }}", body=body
                )
            ),
            metadata=self.auth,
        )
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        graph = flow_pb2.FlowGraph(
            nodes=[
                flow_pb2.GraphNode(id="entry", type="webhook_entry", config=dict_to_struct({"webhook_path": "signup"})),
                flow_pb2.GraphNode(
                    id="mail", type="send_email", config=dict_to_struct({"template_id": "welcome", "data": {"n": 1}})
                ),
            ],
            edges=[flow_pb2.GraphEdge(id="e", source="entry", target="mail")],
        )
        flow = flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="welcome"), graph=graph), metadata=self.auth
        )
        flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=self.auth)
        self.flow_id = flow.id

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return self.tenant.auth

    def send_to(self, participant: str, attributes: dict[str, Any] | None = None) -> str:
        """Start the flow for `participant`, a customer with an email and `attributes` (a name by default)."""
        self._customers.UpsertCustomer(
            customer_pb2.UpsertCustomerRequest(
                customer=customer_pb2.Customer(
                    external_id=participant,
                    email=f"{participant}@x.test",
                    attributes=dict_to_struct({"name": "Ada"} if attributes is None else attributes),
                )
            ),
            metadata=self.auth,
        )
        started = self._triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=self.flow_id, participant_id=participant), metadata=self.auth
        )
        instance_id: str = started.instance_id
        return instance_id

    def delivery_of(self, instance_id: str, status: D.DeliveryStatus.ValueType) -> D.Delivery:
        """The instance's delivery once it has `status`."""

        def listed() -> list[D.Delivery]:
            return list(
                self.deliveries.ListDeliveries(
                    D.ListDeliveriesRequest(instance_id=instance_id), metadata=self.auth
                ).deliveries
            )

        [delivery] = eventually_sync(
            listed,
            until=lambda found: len(found) == 1 and found[0].status == status,
            within=15,
            interval=0.1,
            what=f"the delivery of {instance_id} {D.DeliveryStatus.Name(status)}",
        )
        return delivery

    def report(self, delivery_id: str, status: D.DeliveryStatus.ValueType, **fields: Any) -> D.Delivery:
        answer: D.Delivery = self.deliveries.ReportDeliveryStatus(
            D.ReportDeliveryStatusRequest(delivery_id=delivery_id, status=status, **fields), metadata=self.auth
        )
        return answer


@pytest.fixture(scope="module")
def sender(suite: Suite, channel: grpc.Channel) -> Sender:
    return Sender(suite, channel, "deliveries", "Hello {{ customer.attributes.name }}, n={{ data.n }}")


def test_a_send_email_delivery_is_rendered_sent_and_read_back(suite: Suite, sender: Sender) -> None:
    instance_id = sender.send_to("ada")
    delivery = sender.delivery_of(instance_id, SENT)
    assert (delivery.instance_id, delivery.node_id, delivery.participant_id) == (instance_id, "mail", "ada")
    assert (delivery.channel, delivery.template_id, delivery.provider, delivery.attempts) == (
        "email",
        "welcome",
        "log",
        1,
    )
    assert delivery.provider_message_id.startswith("log-")
    assert delivery.sent_time.seconds > 0
    assert delivery.idempotency_key.startswith(f"{instance_id}:mail:")
    assert sender.deliveries.GetDelivery(D.GetDeliveryRequest(id=delivery.id), metadata=sender.auth) == delivery
    sent_lines = [
        line for line in suite.log_of("scheduler").splitlines() if delivery.id in line and "delivery sent" in line
    ]
    assert len(sent_lines) == 1
    assert '"subject": "Welcome Ada"' in sent_lines[0]
    assert '"body": "Hello Ada, n=1"' in sent_lines[0]


def test_a_template_variable_the_instance_lacks_fails_the_delivery_with_the_reason(sender: Sender) -> None:
    instance_id = sender.send_to("nameless", attributes={"tier": "gold"})  # no `name` for the subject
    delivery = sender.delivery_of(instance_id, FAILED)
    assert delivery.attempts == 1
    assert delivery.reason.startswith("template 'welcome' subject: ")
    assert "'name'" in delivery.reason
    assert delivery.final_time.seconds > 0


def test_reports_move_a_delivery_forward_only(sender: Sender) -> None:
    delivery = sender.delivery_of(sender.send_to("bea"), SENT)
    delivered = sender.report(delivery.id, DELIVERED, provider_message_id="ignored: it has one")
    assert delivered.status == DELIVERED
    assert delivered.provider_message_id == delivery.provider_message_id, "the first known id is kept"
    assert delivered.final_time.seconds > 0

    assert sender.report(delivery.id, DELIVERED) == delivered, "a repeated callback changes nothing"
    for backwards in (SENT, BOUNCED):
        error = rpc_error(lambda status=backwards: sender.report(delivery.id, status))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "INVALID_TRANSITION"
        info = detail_of(error, error_details_pb2.ErrorInfo)
        assert (info.metadata["from"], info.metadata["delivery_id"]) == ("delivered", delivery.id)
    read = sender.deliveries.GetDelivery(D.GetDeliveryRequest(id=delivery.id), metadata=sender.auth)
    assert read.status == DELIVERED


def test_a_bounce_keeps_its_reason_and_its_time(sender: Sender) -> None:
    delivery = sender.delivery_of(sender.send_to("cy"), SENT)
    when = datetime.now(UTC) - timedelta(minutes=3)
    stamp = Timestamp()
    stamp.FromDatetime(when)
    bounced = sender.report(delivery.id, BOUNCED, reason="550 mailbox unavailable", occurred_at=stamp)
    assert (bounced.status, bounced.reason) == (BOUNCED, "550 mailbox unavailable")
    assert bounced.final_time == stamp


def test_a_report_is_checked_before_it_is_relayed(sender: Sender) -> None:
    delivery = sender.delivery_of(sender.send_to("dan"), SENT)
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    error = rpc_error(
        lambda: sender.report(
            "not-a-uuid", PENDING, occurred_at=future, reason="r" * 2001, provider_message_id="m" * 513
        )
    )
    assert set(field_violations(error)) == {"delivery_id", "status", "occurred_at", "reason", "provider_message_id"}
    missing = rpc_error(lambda: sender.report(str(uuid.uuid4()), DELIVERED))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert sender.deliveries.GetDelivery(D.GetDeliveryRequest(id=delivery.id), metadata=sender.auth).status == SENT


def test_a_repeated_request_id_replays_the_first_answer(sender: Sender) -> None:
    delivery = sender.delivery_of(sender.send_to("eve"), SENT)
    first = sender.report(delivery.id, DELIVERED, request_id="callback-1")
    assert sender.report(delivery.id, DELIVERED, request_id="callback-1") == first
    reused = rpc_error(lambda: sender.report(delivery.id, BOUNCED, request_id="callback-1"))
    assert set(field_violations(reused)) == {"request_id"}


def test_list_filters_pages_and_needs_an_instance_or_a_participant(sender: Sender) -> None:
    instances = [sender.send_to("fay"), sender.send_to("fay-2")]
    for instance_id in instances:
        sender.delivery_of(instance_id, SENT)
    by_participant = sender.deliveries.ListDeliveries(
        D.ListDeliveriesRequest(participant_id="fay", channel="email", status=SENT), metadata=sender.auth
    )
    assert [d.instance_id for d in by_participant.deliveries] == [instances[0]]
    none_failed = sender.deliveries.ListDeliveries(
        D.ListDeliveriesRequest(participant_id="fay", status=FAILED), metadata=sender.auth
    )
    assert list(none_failed.deliveries) == []
    first = sender.deliveries.ListDeliveries(
        D.ListDeliveriesRequest(participant_id="fay-2", page_size=1), metadata=sender.auth
    )
    assert len(first.deliveries) == 1
    assert first.next_page_token == ""
    unfiltered = rpc_error(lambda: sender.deliveries.ListDeliveries(D.ListDeliveriesRequest(), metadata=sender.auth))
    assert set(field_violations(unfiltered)) == {"instance_id"}
    bad = rpc_error(
        lambda: sender.deliveries.ListDeliveries(
            D.ListDeliveriesRequest(instance_id="x", channel="fax", status=99),  # type: ignore[arg-type]
            metadata=sender.auth,
        )
    )
    assert set(field_violations(bad)) == {"instance_id", "channel", "status"}


def test_another_tenants_delivery_is_not_found_and_cannot_be_reported(suite: Suite, sender: Sender) -> None:
    instance_id = sender.send_to("gus")
    delivery = sender.delivery_of(instance_id, SENT)
    other = new_tenant(suite, "deliveries-other")
    stub = sender.deliveries
    assert rpc_error(lambda: stub.GetDelivery(D.GetDeliveryRequest(id=delivery.id), metadata=other.auth)).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    report = D.ReportDeliveryStatusRequest(delivery_id=delivery.id, status=DELIVERED)
    assert rpc_error(lambda: stub.ReportDeliveryStatus(report, metadata=other.auth)).code() == grpc.StatusCode.NOT_FOUND
    listed = stub.ListDeliveries(D.ListDeliveriesRequest(instance_id=instance_id), metadata=other.auth)
    assert list(listed.deliveries) == []
    assert stub.GetDelivery(D.GetDeliveryRequest(id=delivery.id), metadata=sender.auth).status == SENT
