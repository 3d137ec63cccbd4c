"""Composition root of `kalcifer-api`: settings -> database -> repositories -> servicers -> server."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from kalcifer.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
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
    instance_pb2,
    instance_pb2_grpc,
    journey_pb2,
    journey_pb2_grpc,
    node_type_pb2,
    node_type_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.db.health import DatabaseProbe
from kalcifer_common.db.session import create_engine, create_sessionmaker
from kalcifer_common.metrics import MetricsEndpoint
from kalcifer_common.rpc.auth import ApiKeyCache, AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.server import GrpcServer, ServiceBinding, binding
from kalcifer_common.sandbox import ExpressionSandbox, SandboxLimits
from kalcifer_common.secrets import SecretBox
from kalcifer_common.service import serve_until_signal, wait_for_database
from kalcifer_common.settings import ApiSettings
from kalcifer_common.tracing import configure_tracing
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kalcifer_api.engine_client import EngineClient
from kalcifer_api.grpc.analytics import AnalyticsServicer
from kalcifer_api.grpc.channels import ChannelServicer
from kalcifer_api.grpc.customers import CustomerServicer
from kalcifer_api.grpc.deliveries import DeliveryServicer
from kalcifer_api.grpc.events import EventServicer
from kalcifer_api.grpc.flows import FlowServicer
from kalcifer_api.grpc.instances import InstanceServicer
from kalcifer_api.grpc.journeys import JourneyServicer
from kalcifer_api.grpc.node_types import NodeTypeServicer
from kalcifer_api.grpc.segments import SegmentServicer
from kalcifer_api.grpc.templates import TemplateServicer
from kalcifer_api.grpc.tenants import TenantServicer
from kalcifer_api.grpc.triggers import TriggerServicer
from kalcifer_api.rate_limits import TenantRateLimiter
from kalcifer_api.repo.analytics import AnalyticsRepository
from kalcifer_api.repo.channels import ChannelRepository
from kalcifer_api.repo.customers import CustomerRepository
from kalcifer_api.repo.deliveries import DeliveryRepository
from kalcifer_api.repo.events import EventRepository
from kalcifer_api.repo.flows import FlowRepository
from kalcifer_api.repo.instances import InstanceRepository
from kalcifer_api.repo.journeys import JourneyRepository
from kalcifer_api.repo.node_types import NodeTypeCalls
from kalcifer_api.repo.segments import SegmentRepository
from kalcifer_api.repo.templates import TemplateRepository
from kalcifer_api.repo.tenants import TenantRepository
from kalcifer_api.repo.triggers import WebhookTargetRepository
from kalcifer_api.scheduler_client import SchedulerClient


@dataclass(frozen=True)
class Collaborators:
    """What the tenant-scoped servicers use besides the database, built once by `serve`."""

    engine: EngineClient
    scheduler: SchedulerClient
    # Tenants' templates are compiled and rendered only in these worker processes (started on first use).
    sandbox: ExpressionSandbox
    secrets: SecretBox


def tenant_scoped_bindings(sessions: async_sessionmaker[AsyncSession], using: Collaborators) -> list[ServiceBinding]:
    """The services a tenant calls with its API key (implemented ones replace their placeholder)."""
    engine_client = using.engine
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
            template_pb2,
            template_pb2_grpc,
            "TemplateService",
            TemplateServicer(TemplateRepository(sessions), using.sandbox),
        ),
        binding(
            channel_pb2,
            channel_pb2_grpc,
            "ChannelService",
            ChannelServicer(ChannelRepository(sessions), using.secrets),
        ),
        binding(
            delivery_pb2,
            delivery_pb2_grpc,
            "DeliveryService",
            DeliveryServicer(DeliveryRepository(sessions), using.scheduler),
        ),
        binding(
            trigger_pb2,
            trigger_pb2_grpc,
            "TriggerService",
            TriggerServicer(engine_client.stub, engine_client.starts, WebhookTargetRepository(sessions)),
        ),
        binding(
            event_pb2,
            event_pb2_grpc,
            "EventService",
            EventServicer(EventRepository(sessions), engine_client.stub, engine_client.routes),
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
    tracing = configure_tracing(settings, service_name="kalcifer-api")
    metrics = MetricsEndpoint(settings.api_metrics_port)
    metrics.start()
    # No pre-ping (three round trips per checkout): a connection PostgreSQL dropped fails one call, answered
    # UNAVAILABLE (callers retry), and invalidates the pool's other connections of before the drop.
    engine = create_engine(
        settings.database_url,
        role=settings.database_role,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pre_ping=False,
    )
    await wait_for_database(engine)
    sessions = create_sessionmaker(engine)
    tenants = TenantRepository(sessions)

    tenant_binding = binding(tenant_pb2, tenant_pb2_grpc, "TenantService", TenantServicer(tenants))
    using = Collaborators(
        engine=EngineClient(settings),
        scheduler=SchedulerClient(settings),
        sandbox=ExpressionSandbox(
            SandboxLimits(
                workers=settings.template_workers,
                timeout_seconds=settings.template_timeout_ms / 1000,
                memory_mb=settings.template_memory_mb,
            )
        ),
        secrets=SecretBox.from_settings(
            settings.kalcifer_secret_key.get_secret_value(),
            settings.kalcifer_previous_secret_keys.get_secret_value(),
        ),
    )
    scoped = tenant_scoped_bindings(sessions, using)
    policies = {tenant_binding.full_name: AuthPolicy.ADMIN} | {b.full_name: AuthPolicy.API_KEY for b in scoped}
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
    limiter = TenantRateLimiter(
        redis,
        per_second=settings.rate_limit_per_second,
        burst=settings.rate_limit_burst,
        key_prefix=settings.redis_key_prefix,
        max_held=settings.rate_limit_max_held,
        max_held_total=settings.max_concurrent_rpcs // 2,
    )
    interceptor = AuthInterceptor(
        policies=policies,
        admin_token=settings.kalcifer_admin_token,
        api_keys=ApiKeyCache(tenants.identity_of, ttl_seconds=settings.api_key_cache_seconds),
        admission=limiter.admit,
    )
    server = GrpcServer(
        name="api",
        bindings=[tenant_binding, *scoped],
        port=settings.api_port,
        interceptors=[interceptor],
        grace_seconds=settings.shutdown_grace_seconds,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        tls=settings.tls(),
    )
    # NOT_SERVING while PostgreSQL does not answer (Redis only limits rates, and fails open: not a dependency here).
    probe = DatabaseProbe(settings.database_url, role=settings.database_role)
    await serve_until_signal(
        server,
        cleanup=[
            metrics.stop,
            tracing.shutdown,
            probe.close,
            using.engine.close,
            using.scheduler.close,
            using.sandbox.close,
            engine.dispose,
            redis.aclose,
        ],
        health={"database": probe.answers},
        health_interval_seconds=settings.health_interval_seconds,
    )
