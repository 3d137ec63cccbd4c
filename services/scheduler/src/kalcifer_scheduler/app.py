"""Composition root of `kalcifer-scheduler`: settings -> Redis -> servicers -> server."""

from __future__ import annotations

from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer_common.rpc.auth import AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.server import GrpcServer, binding
from kalcifer_common.service import serve_until_signal
from kalcifer_common.settings import SchedulerSettings
from redis.asyncio import Redis


async def serve(settings: SchedulerSettings) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    if not settings.kalcifer_internal_token:
        raise SystemExit("KALCIFER_INTERNAL_TOKEN must be set: the scheduler accepts only internal callers")
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    await redis.ping()
    scheduler_binding = binding(scheduler_pb2, scheduler_pb2_grpc, "SchedulerService")
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
    )
    await serve_until_signal(server, cleanup=[redis.aclose])
