"""A journey that sends email through a real local SMTP server (aiosmtpd), all through the public gRPC API (SPEC 7).

A marketer sets the email channel to `smtp` (TLS verified against the server's own CA, a sealed password),
writes a template, wraps a flow `event_entry -> send_email` in a journey and launches it; a signup event starts
it. The mail server is down at first: the delivery waits PENDING and is retried with backoff; once the server is
up it is SENT, with the subject and bodies rendered from the customer and the event; a provider's report then
makes it DELIVERED, and a report that would take it back is refused with FAILED_PRECONDITION.

This module runs its own suite: only 127.0.0.1 is allowlisted for outbound connections, and retries are quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from kalcifer.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    journey_pb2,
    journey_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, free_port, scratch_suite
from tests.support.rpc import detail_of, rpc_error
from tests.support.smtp import running_smtp, self_signed_certificate
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

D = delivery_pb2
LOGIN = ("acme-mailer", "correct horse battery staple")


@pytest.fixture(scope="module")
def mail_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The three services on their own database and Redis db; outbound connections to 127.0.0.1 allowed."""
    settings = {
        "OUTBOUND_ALLOWLIST": "127.0.0.1",
        "DELIVERY_BACKOFF_SECONDS": "0.3",
        "DELIVERY_MAX_ATTEMPTS": "20",
        "DELIVERY_SWEEP_INTERVAL_SECONDS": "0.5",
    }
    log_dir: Path = tmp_path_factory.mktemp("mail-suite-logs")
    with scratch_suite(servers, log_dir, settings) as suite:
        yield suite


def test_a_journey_emails_through_a_real_smtp_server_and_its_delivery_only_moves_forward(mail_suite: Suite) -> None:
    auth = new_tenant(mail_suite, "mail").auth
    api = grpc.insecure_channel(mail_suite.address("api"))
    channels = channel_pb2_grpc.ChannelServiceStub(api)
    templates = template_pb2_grpc.TemplateServiceStub(api)
    flows = flow_pb2_grpc.FlowServiceStub(api)
    journeys = journey_pb2_grpc.JourneyServiceStub(api)
    customers = customer_pb2_grpc.CustomerServiceStub(api)
    events = event_pb2_grpc.EventServiceStub(api)
    deliveries = delivery_pb2_grpc.DeliveryServiceStub(api)

    with self_signed_certificate() as certificate:
        port = free_port()  # the mail server will listen here, once it is up
        settings = {
            "host": "127.0.0.1",
            "port": port,
            "from": "hello@acme.test",
            "from_name": "Acme",
            "username": LOGIN[0],
            "password": LOGIN[1],
            "ca_cert": certificate.pem,
        }
        provider = channels.SetChannelProvider(
            channel_pb2.SetChannelProviderRequest(channel="email", provider="smtp", settings=dict_to_struct(settings)),
            metadata=auth,
        )
        assert list(provider.secret_settings) == ["password"]
        assert "password" not in provider.settings.fields

        templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    id="welcome",
                    channel="email",
                    subject="Welcome aboard, {{ customer.attributes.first_name }}!",
                    body="Hi {{ customer.attributes.first_name }}, your {{ event.plan }} plan is ready. {{ data.cta }}",
                    html_body="<h1>Hi {{ customer.attributes.first_name }}</h1><p>{{ event.plan | upper }}</p>",
                )
            ),
            metadata=auth,
        )
        graph = flow_pb2.FlowGraph(
            nodes=[
                flow_pb2.GraphNode(id="signup", type="event_entry", config=dict_to_struct({"event_type": "signup"})),
                flow_pb2.GraphNode(
                    id="welcome_mail",
                    type="send_email",
                    config=dict_to_struct({"template_id": "welcome", "data": {"cta": "Log in today."}}),
                ),
            ],
            edges=[flow_pb2.GraphEdge(id="e1", source="signup", target="welcome_mail")],
        )
        flow = flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="welcome"), graph=graph), metadata=auth
        )
        journey = journeys.CreateJourney(
            journey_pb2.CreateJourneyRequest(journey=journey_pb2.Journey(name="Welcome", flow_id=flow.id)),
            metadata=auth,
        )
        journeys.LaunchJourney(journey_pb2.LaunchJourneyRequest(id=journey.id), metadata=auth)
        customers.UpsertCustomer(
            customer_pb2.UpsertCustomerRequest(
                customer=customer_pb2.Customer(
                    external_id="ada", email="ada@example.test", attributes=dict_to_struct({"first_name": "Ada"})
                )
            ),
            metadata=auth,
        )
        ingested = events.IngestEvent(
            event_pb2.IngestEventRequest(
                participant_id="ada", event_type="signup", data=dict_to_struct({"plan": "pro"})
            ),
            metadata=auth,
        )
        assert ingested.started == 1

        def listed() -> list[D.Delivery]:
            answer = deliveries.ListDeliveries(D.ListDeliveriesRequest(participant_id="ada"), metadata=auth)
            return list(answer.deliveries)

        # The server is down: the delivery is PENDING again after each attempt, with why, until a later attempt.
        [pending] = eventually_sync(
            listed,
            until=lambda found: (
                len(found) == 1 and found[0].status == D.DELIVERY_STATUS_PENDING and found[0].attempts >= 1
            ),
            within=20,
            interval=0.05,
            what="a delivery pending after a failed attempt",
        )
        assert (pending.channel, pending.template_id, pending.node_id) == ("email", "welcome", "welcome_mail")
        assert "smtp server unreachable" in pending.reason
        assert pending.send_after.seconds > 0, "the next attempt waits for its backoff"

        with running_smtp(login=LOGIN, port=port, certificate=certificate) as smtp:
            sent = eventually_sync(
                lambda: deliveries.GetDelivery(D.GetDeliveryRequest(id=pending.id), metadata=auth),
                until=lambda found: found.status == D.DELIVERY_STATUS_SENT,
                within=30,
                interval=0.1,
                what="the delivery sent",
            )
            [mail] = eventually_sync(lambda: smtp.mail_to("ada@example.test"), within=5, what="the mail received")

    assert (sent.provider, sent.attempts >= 2, sent.reason) == ("smtp", True, "")
    assert (mail.over_tls, mail.login, mail.mail_from) == (True, LOGIN[0], "hello@acme.test")
    assert mail.message["Subject"] == "Welcome aboard, Ada!"
    assert mail.message["From"] == "Acme <hello@acme.test>"
    assert mail.message["To"] == "ada@example.test"
    assert mail.message["Message-ID"] == sent.provider_message_id
    assert mail.text().strip() == "Hi Ada, your pro plan is ready. Log in today."
    assert mail.html().strip() == "<h1>Hi Ada</h1><p>PRO</p>"

    # The provider's callback: SENT -> DELIVERED.
    delivered = deliveries.ReportDeliveryStatus(
        D.ReportDeliveryStatusRequest(delivery_id=sent.id, status=D.DELIVERY_STATUS_DELIVERED), metadata=auth
    )
    assert delivered.status == D.DELIVERY_STATUS_DELIVERED
    assert delivered.final_time.seconds > 0
    # Backwards: refused, and nothing changes.
    backwards = rpc_error(
        lambda: deliveries.ReportDeliveryStatus(
            D.ReportDeliveryStatusRequest(delivery_id=sent.id, status=D.DELIVERY_STATUS_SENT), metadata=auth
        )
    )
    assert backwards.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = detail_of(backwards, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["from"], info.metadata["to"]) == ("INVALID_TRANSITION", "delivered", "sent")
    assert deliveries.GetDelivery(D.GetDeliveryRequest(id=sent.id), metadata=auth).status == D.DELIVERY_STATUS_DELIVERED
    # The password went to the mail server and nowhere else.
    for service in ("api", "engine", "scheduler"):
        assert LOGIN[1] not in mail_suite.log_of(service)
    api.close()
