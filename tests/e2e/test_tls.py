"""TLS on every gRPC port and mutual TLS between the services (SPEC 10), with a throwaway CA."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer.v1 import (
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.certificates import Certificates, make_certificates
from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, scratch_suite
from tests.support.rpc import bearer


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_suite(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[Suite]:
    """The services with TLS on every port and mTLS between them."""
    settings = {
        "TLS_CERT_FILE": str(certificates.server_cert),
        "TLS_KEY_FILE": str(certificates.server_key),
        "TLS_CA_FILE": str(certificates.ca),
    }
    with scratch_suite(servers, tmp_path_factory.mktemp("tls-logs"), settings) as suite:
        yield suite


def _health(channel: grpc.Channel) -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(response.status)


def test_a_tenant_reaches_the_api_over_tls_without_a_client_certificate_and_a_flow_runs_through_mtls(
    tls_suite: Suite, certificates: Certificates
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
    with grpc.secure_channel(tls_suite.address("api"), credentials) as channel:
        created = tenant_pb2_grpc.TenantServiceStub(channel).CreateTenant(
            tenant_pb2.CreateTenantRequest(name="tls"), metadata=bearer(tls_suite.admin_token)
        )
        auth = bearer(created.raw_key)
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        graph = flow_pb2.FlowGraph(
            nodes=[
                flow_pb2.GraphNode(id="go", type="event_entry", config=dict_to_struct({"event_type": "go"})),
                flow_pb2.GraphNode(id="pause", type="wait", config=dict_to_struct({"duration": "1s"})),
            ],
            edges=[flow_pb2.GraphEdge(source="go", target="pause")],
        )
        flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="tls"), graph=graph), metadata=auth)
        flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)
        started = trigger_pb2_grpc.TriggerServiceStub(channel).TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow.id, participant_id=f"p-{uuid.uuid4().hex[:6]}"), metadata=auth
        )
        instances = instance_pb2_grpc.InstanceServiceStub(channel)
        # API -> engine -> scheduler (arm) -> engine (resume): every internal hop over mutual TLS.
        eventually_sync(
            lambda: instances.GetInstance(instance_pb2.GetInstanceRequest(id=started.instance_id), metadata=auth),
            until=lambda found: found.status == instance_pb2.INSTANCE_STATUS_COMPLETED,
            within=20,
            interval=0.2,
            what="the instance completed through mTLS hops",
        )


def test_plaintext_is_refused_on_every_port(tls_suite: Suite) -> None:
    for service in ("api", "engine", "scheduler"):
        with grpc.insecure_channel(tls_suite.address(service)) as channel, pytest.raises(grpc.RpcError) as refused:
            _health(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_internal_services_demand_a_client_certificate_from_the_ca(
    tls_suite: Suite, certificates: Certificates
) -> None:
    ca = certificates.ca.read_bytes()
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
    client = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=certificates.client_key.read_bytes(),
        certificate_chain=certificates.client_cert.read_bytes(),
    )
    for service in ("engine", "scheduler"):
        with grpc.secure_channel(tls_suite.address(service), anonymous) as channel, pytest.raises(grpc.RpcError):
            _health(channel)
        with grpc.secure_channel(tls_suite.address(service), client) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
