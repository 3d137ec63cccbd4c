"""Composition root of `kalcifer-engine`: settings -> database -> registry -> servicers -> server."""

from __future__ import annotations

from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.db.health import DatabaseProbe
from kalcifer_common.db.session import create_engine, create_sessionmaker
from kalcifer_common.metrics import MetricsEndpoint, PeriodicRefresh
from kalcifer_common.rpc.auth import AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.server import GrpcServer, binding
from kalcifer_common.service import serve_until_signal, wait_for_database
from kalcifer_common.settings import EngineSettings
from kalcifer_common.tracing import configure_tracing

from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.grpc.servicer import EngineServicer
from kalcifer_engine.nodes.registry import NodeRegistry, builtin_registry
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.gauges import refresh_instance_counts
from kalcifer_engine.runtime.recovery import RecoveryLoop


async def serve(settings: EngineSettings, *, builtins: NodeRegistry | None = None) -> None:
    """Run the engine until SIGTERM/SIGINT; `builtins` replaces the built-in registry (test node types)."""
    if not settings.kalcifer_internal_token:
        raise SystemExit("KALCIFER_INTERNAL_TOKEN must be set: the engine accepts only internal callers")
    tracing = configure_tracing(settings, service_name="kalcifer-engine")
    metrics = MetricsEndpoint(settings.engine_metrics_port)
    metrics.start()
    # No pre-ping: a dropped connection fails one run, answered UNAVAILABLE, and callers retry (3 round trips saved).
    engine = create_engine(
        settings.database_url,
        role=settings.database_role,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pre_ping=False,
    )
    await wait_for_database(engine)
    deps = EngineDeps(
        settings=settings,
        db=engine,
        sessions=create_sessionmaker(engine),
        registry=builtins if builtins is not None else builtin_registry(),
    )
    servicer = EngineServicer(deps)
    engine_binding = binding(engine_pb2, engine_pb2_grpc, "EngineService", servicer)
    server = GrpcServer(
        name="engine",
        bindings=[engine_binding],
        port=settings.engine_port,
        interceptors=[
            AuthInterceptor(
                policies={engine_binding.full_name: AuthPolicy.INTERNAL},
                internal_token=settings.kalcifer_internal_token,
            )
        ],
        grace_seconds=settings.shutdown_grace_seconds,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        tls=settings.tls(),
        internal=True,
    )
    runtime = deps.runtime = Runtime(deps)
    recovery = RecoveryLoop(runtime)
    recovery.start()  # also recovers at once: work a crashed predecessor left behind
    gauges = PeriodicRefresh(
        "instances", lambda: refresh_instance_counts(engine), interval_seconds=settings.metrics_refresh_seconds
    )
    if metrics.enabled:
        gauges.start()
    # NOT_SERVING while PostgreSQL does not answer (a restart): the process stays and serves again by itself.
    probe = DatabaseProbe(settings.database_url, role=settings.database_role)
    # Cleanups run in reverse: stop recovering and counting, flush scheduler requests, stop CEL workers, close the
    # pools, then flush the spans and stop /metrics.
    await serve_until_signal(
        server,
        cleanup=[
            metrics.stop,
            tracing.shutdown,
            probe.close,
            engine.dispose,
            runtime.close,
            recovery.stop,
            gauges.stop,
        ],
        health={"database": probe.answers},
        health_interval_seconds=settings.health_interval_seconds,
    )
