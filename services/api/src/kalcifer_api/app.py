"""Composition root of `kalcifer-api`: settings -> database -> repositories -> servicers -> server."""

from __future__ import annotations

from kalcifer.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
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
    node_type_pb2,
    node_type_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.db.session import create_engine, create_sessionmaker
from kalcifer_common.rpc.auth import ApiKeyCache, AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.server import GrpcServer, ServiceBinding, binding
from kalcifer_common.service import serve_until_signal, wait_for_database
from kalcifer_common.settings import ApiSettings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kalcifer_api.engine_client import EngineClient
from kalcifer_api.grpc.analytics import AnalyticsServicer
from kalcifer_api.grpc.customers import CustomerServicer
from kalcifer_api.grpc.events import EventServicer
from kalcifer_api.grpc.flows import FlowServicer
from kalcifer_api.grpc.instances import InstanceServicer
from kalcifer_api.grpc.journeys import JourneyServicer
from kalcifer_api.grpc.node_types import NodeTypeServicer
from kalcifer_api.grpc.segments import SegmentServicer
from kalcifer_api.grpc.tenants import TenantServicer
from kalcifer_api.grpc.triggers import TriggerServicer
from kalcifer_api.repo.analytics import AnalyticsRepository
from kalcifer_api.repo.customers import CustomerRepository
from kalcifer_api.repo.events import EventRepository
from kalcifer_api.repo.flows import FlowRepository
from kalcifer_api.repo.instances import InstanceRepository
from kalcifer_api.repo.journeys import JourneyRepository
from kalcifer_api.repo.node_types import NodeTypeCalls
from kalcifer_api.repo.segments import SegmentRepository
from kalcifer_api.repo.tenants import TenantRepository
from kalcifer_api.repo.triggers import WebhookTargetRepository


def tenant_scoped_bindings(
    sessions: async_sessionmaker[AsyncSession], engine_client: EngineClient
) -> list[ServiceBinding]:
    """The services a tenant calls with its API key (implemented ones replace their placeholder)."""
    return [
        binding(flow_pb2, flow_pb2_grpc, "FlowService", FlowServicer(FlowRepository(sessions), engine_client)),
        binding(
            journey_pb2,
            journey_pb2_grpc,
            "JourneyService",
            JourneyServicer(JourneyRepository(sessions), engine_client),
        ),
        binding(customer_pb2, customer_pb2_grpc, "CustomerService", CustomerServicer(CustomerRepository(sessions))),
        binding(segment_pb2, segment_pb2_grpc, "SegmentService", SegmentServicer(SegmentRepository(sessions))),
        binding(
            trigger_pb2,
            trigger_pb2_grpc,
            "TriggerService",
            TriggerServicer(engine_client.stub, WebhookTargetRepository(sessions)),
        ),
        binding(
            event_pb2, event_pb2_grpc, "EventService", EventServicer(EventRepository(sessions), engine_client.stub)
        ),
        binding(
            instance_pb2,
            instance_pb2_grpc,
            "InstanceService",
            InstanceServicer(InstanceRepository(sessions), engine_client.stub),
        ),
        binding(
            node_type_pb2,
            node_type_pb2_grpc,
            "NodeTypeService",
            NodeTypeServicer(engine_client, NodeTypeCalls(sessions)),
        ),
        binding(
            analytics_pb2, analytics_pb2_grpc, "AnalyticsService", AnalyticsServicer(AnalyticsRepository(sessions))
        ),
    ]


async def serve(settings: ApiSettings) -> None:
    """Run the API until SIGTERM/SIGINT."""
    engine = create_engine(
        settings.database_url,
        role=settings.database_role,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    await wait_for_database(engine)
    sessions = create_sessionmaker(engine)
    tenants = TenantRepository(sessions)

    tenant_binding = binding(tenant_pb2, tenant_pb2_grpc, "TenantService", TenantServicer(tenants))
    engine_client = EngineClient(settings)
    scoped = tenant_scoped_bindings(sessions, engine_client)
    policies = {tenant_binding.full_name: AuthPolicy.ADMIN} | {b.full_name: AuthPolicy.API_KEY for b in scoped}
    interceptor = AuthInterceptor(
        policies=policies,
        admin_token=settings.kalcifer_admin_token,
        api_keys=ApiKeyCache(tenants.identity_of, ttl_seconds=settings.api_key_cache_seconds),
    )
    server = GrpcServer(
        name="api",
        bindings=[tenant_binding, *scoped],
        port=settings.api_port,
        interceptors=[interceptor],
        grace_seconds=settings.shutdown_grace_seconds,
    )
    await serve_until_signal(server, cleanup=[engine_client.close, engine.dispose])
