"""Composition root of `kalcifer-scheduler`: settings -> database, Redis, engine client -> timers, deliveries,
maintenance -> arq workers and background loops -> gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker
from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer_common.db.health import DatabaseProbe
from kalcifer_common.db.session import create_engine
from kalcifer_common.logging import get_logger
from kalcifer_common.metrics import MetricsEndpoint, PeriodicRefresh
from kalcifer_common.outbound_policy import OutboundPolicy
from kalcifer_common.rpc.auth import AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.rpc.server import GrpcServer, binding, wait_for_shutdown_signal
from kalcifer_common.sandbox import ExpressionSandbox, SandboxLimits
from kalcifer_common.secrets import SecretBox
from kalcifer_common.service import wait_for_database
from kalcifer_common.settings import SchedulerSettings
from kalcifer_common.tracing import configure_tracing

from kalcifer_scheduler.deliveries.providers import LogProvider, SmtpProvider, WebhookProvider
from kalcifer_scheduler.deliveries.queue import DeliveryQueue
from kalcifer_scheduler.deliveries.reports import StatusReports
from kalcifer_scheduler.deliveries.sender import DeliverySender
from kalcifer_scheduler.engine_resumes import ResumeSender
from kalcifer_scheduler.entries import ScheduledEntries
from kalcifer_scheduler.grpc.servicer import SchedulerServicer
from kalcifer_scheduler.health import HealthMonitor
from kalcifer_scheduler.job_codec import JSON_JOBS
from kalcifer_scheduler.keys import RedisKeys
from kalcifer_scheduler.maintenance import Maintenance
from kalcifer_scheduler.metrics import QueueGauges
from kalcifer_scheduler.outbound.calls import CallMaker
from kalcifer_scheduler.outbound.client import OutboundClient
from kalcifer_scheduler.runtime import SchedulerRuntime, sweep_grace_seconds
from kalcifer_scheduler.stats import SchedulerStats
from kalcifer_scheduler.timers.claims import WaitClaims
from kalcifer_scheduler.timers.firing import TimerFirer
from kalcifer_scheduler.timers.store import TimerStore
from kalcifer_scheduler.timers.sweep import WaitSweeper
from kalcifer_scheduler.workers import build_workers, run_supervised

_log = get_logger(__name__)

# A webhook delivery's one attempt (the delivery queue retries it later with backoff).
_WEBHOOK_TIMEOUT_SECONDS = 10.0


async def build_runtime(settings: SchedulerSettings, redis: ArqRedis) -> SchedulerRuntime:
    """Wire the scheduler's collaborators (the database must answer; the engine may come later)."""
    # No pre-ping (three round trips per checkout): a connection PostgreSQL dropped fails one call, answered
    # UNAVAILABLE (callers retry), and invalidates the pool's other connections of before the drop.
    db = create_engine(
        settings.database_url,
        role=settings.database_role,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pre_ping=False,
    )
    await wait_for_database(db)
    engine_channel = internal_channel(
        settings.engine_addr,
        token=settings.kalcifer_internal_token,
        timeout_seconds=settings.rpc_timeout_seconds,
        tls=settings.tls(),
    )
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(engine_channel)
    keys = RedisKeys(settings.redis_key_prefix)
    stats = SchedulerStats()
    store = TimerStore(
        redis, keys, bucket_seconds=settings.timer_bucket_seconds, horizon_seconds=settings.timer_horizon_seconds
    )
    claims = WaitClaims(db, lease_seconds=settings.claim_lease_seconds)
    sender = ResumeSender(
        engine_stub, deadline_seconds=settings.rpc_timeout_seconds, retry_seconds=settings.resume_retry_seconds
    )
    policy = OutboundPolicy.parse(settings.outbound_allowlist)  # checked when the settings were read
    http = OutboundClient(policy, max_response_bytes=settings.outbound_max_response_bytes)
    calls = CallMaker(
        claims=claims,
        client=http,
        sender=sender,
        stats=stats,
        concurrency=settings.outbound_concurrency,
        max_attempts=settings.outbound_max_attempts,
        backoff_seconds=settings.outbound_backoff_seconds,
    )
    # Tenants' message templates are rendered only in these worker processes (started on first use).
    templates = ExpressionSandbox(
        SandboxLimits(
            workers=settings.template_workers,
            timeout_seconds=settings.template_timeout_ms / 1000,
            memory_mb=settings.template_memory_mb,
        )
    )
    secrets = SecretBox.from_settings(
        settings.kalcifer_secret_key.get_secret_value(), settings.kalcifer_previous_secret_keys.get_secret_value()
    )
    firer = TimerFirer(
        claims=claims, store=store, sender=sender, stats=stats, batch_size=settings.fire_batch_size, calls=calls
    )
    # The scheduled entries' run-long lock has a connection of its own (see SegmentEntries).
    entries_lock_db = create_engine(settings.database_url, role=settings.database_role, pool_size=1, max_overflow=0)
    return SchedulerRuntime(
        settings=settings,
        db=db,
        redis=redis,
        engine_channel=engine_channel,
        http=http,
        calls=calls,
        templates=templates,
        stats=stats,
        timers=store,
        firer=firer,
        sweeper=WaitSweeper(
            redis=redis,
            keys=keys,
            claims=claims,
            store=store,
            firer=firer,
            interval_seconds=settings.sweep_interval_seconds,
            grace_seconds=sweep_grace_seconds(settings),
            batch_size=settings.sweep_batch_size,
            horizon_seconds=settings.timer_horizon_seconds,
        ),
        deliveries=DeliveryQueue(
            redis,
            db,
            lease_seconds=settings.claim_lease_seconds,
            interval_seconds=settings.delivery_sweep_interval_seconds,
            per_tenant=settings.deliveries_queued_per_tenant,
        ),
        delivery_sender=DeliverySender(
            db,
            providers={
                "log": LogProvider(),
                "webhook": WebhookProvider(http, timeout_seconds=_WEBHOOK_TIMEOUT_SECONDS),
                "smtp": SmtpProvider(policy),
            },
            templates=templates,
            secrets=secrets,
            stats=stats,
            lease_seconds=settings.claim_lease_seconds,
            max_attempts=settings.delivery_max_attempts,
            backoff_seconds=settings.delivery_backoff_seconds,
        ),
        reports=StatusReports(db),
        maintenance=Maintenance(db, stuck_seconds=settings.stuck_running_seconds),
        entries=ScheduledEntries(
            db,
            engine_stub,
            overlap=timedelta(seconds=settings.segment_entry_overlap_seconds),
            lock_db=entries_lock_db,
        ),
        entries_lock_db=entries_lock_db,
    )


async def _drain(workers: list[Worker], grace_seconds: float) -> None:
    """Stop picking jobs and let the running ones (timer batches in flight) finish within the grace period; what
    is cut off stays claimed in PostgreSQL and is fired by a sweep once its lease passes."""
    for worker in workers:
        worker.allow_pick_jobs = False
    running = [task for worker in workers for task in worker.tasks.values() if not task.done()]
    if running:
        await asyncio.wait(running, timeout=grace_seconds)


async def serve(settings: SchedulerSettings) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    if not settings.kalcifer_internal_token:
        raise SystemExit("KALCIFER_INTERNAL_TOKEN must be set: the scheduler accepts only internal callers")
    tracing = configure_tracing(settings, service_name="kalcifer-scheduler")
    metrics = MetricsEndpoint(settings.scheduler_metrics_port)
    metrics.start()
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), **JSON_JOBS)
    await redis.ping()
    runtime = await build_runtime(settings, redis)
    servicer = SchedulerServicer(
        timers=runtime.timers, deliveries=runtime.deliveries, reports=runtime.reports, stats=runtime.stats
    )
    scheduler_binding = binding(scheduler_pb2, scheduler_pb2_grpc, "SchedulerService", servicer)
    server = GrpcServer(
        name="scheduler",
        bindings=[scheduler_binding],
        port=settings.scheduler_port,
        interceptors=[
            AuthInterceptor(
                policies={scheduler_binding.full_name: AuthPolicy.INTERNAL},
                internal_token=settings.kalcifer_internal_token,
            )
        ],
        grace_seconds=settings.shutdown_grace_seconds,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        tls=settings.tls(),
        internal=True,
    )
    workers = build_workers(runtime)
    probe = DatabaseProbe(settings.database_url, role=settings.database_role)
    monitor = HealthMonitor(
        server=server,
        database=probe,
        redis=redis,
        engine_channel=runtime.engine_channel,
        stats=runtime.stats,
        interval_seconds=settings.health_interval_seconds,
        stats_interval_seconds=settings.stats_interval_seconds,
    )
    gauges = QueueGauges(redis, RedisKeys(settings.redis_key_prefix))
    loops: dict[str, Callable[[], Awaitable[None]]] = {
        "sweep": runtime.sweeper.run,
        "delivery-sweep": runtime.deliveries.run,
        "health": monitor.run,
        **{f"arq-{worker.queue_name}": worker.async_run for worker in workers},
    }
    refresh = PeriodicRefresh("queues", gauges.refresh, interval_seconds=settings.metrics_refresh_seconds)
    tasks: list[asyncio.Task[None]] = []
    try:
        await server.start()
        tasks = [asyncio.create_task(run_supervised(name, start), name=name) for name, start in loops.items()]
        if metrics.enabled:
            refresh.start()
        await wait_for_shutdown_signal()
    finally:
        await refresh.stop()
        await server.stop()
        await _drain(workers, settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.close()
        await runtime.calls.close()
        await runtime.templates.close()
        await runtime.http.aclose()
        await runtime.engine_channel.close(grace=None)
        await redis.aclose()
        await probe.close()
        await runtime.db.dispose()
        if runtime.entries_lock_db is not None:
            await runtime.entries_lock_db.dispose()
        await tracing.shutdown()
        await metrics.stop()
        _log.info("scheduler stopped", **{"fired": runtime.stats.fired, "failed": runtime.stats.failed})
