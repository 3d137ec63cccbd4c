"""The gRPC server bootstrap all three services share: health with per-service status, server reflection,
interceptors (every server records RPC metrics and, when tracing, continues the caller's trace, before its own),
and a graceful shutdown on SIGTERM/SIGINT that drains in-flight calls."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kalcifer_common import tracing
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.metrics import RpcMetricsInterceptor
from kalcifer_common.rpc.tls import TlsFiles

_log = get_logger(__name__)

# Generous limits for graphs and event batches, still bounded.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
# Clients resolve a service name once per connection (`rpc.clients`: round_robin over `dns:///engine:4510`), so a
# replica started later gets no calls from a connection that never breaks. Closing each connection after a few
# minutes (gRPC adds jitter; in-flight calls get the grace to finish) makes every client resolve again and spread
# over the replicas there are now.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """One servicer and how to add it to a server."""

    descriptor: ServiceDescriptor
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    @property
    def full_name(self) -> str:
        """The fully-qualified service name, e.g. `kalcifer.v1.TenantService`."""
        return self.descriptor.full_name


@dataclass
class GrpcServer:
    """An aio server with health and reflection, started and stopped as one unit."""

    name: str
    bindings: Sequence[ServiceBinding]
    port: int
    host: str = "[::]"
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()
    grace_seconds: float = 10.0
    # Calls served at once; beyond it gRPC answers RESOURCE_EXHAUSTED at once instead of queueing without bound.
    max_concurrent_rpcs: int | None = None
    # TLS for every call (`rpc.tls`); `internal` servers also demand a client certificate when TLS has a CA.
    tls: TlsFiles | None = None
    internal: bool = False
    health: HealthServicer = field(default_factory=HealthServicer)
    _server: grpc.aio.Server | None = None
    bound_port: int = 0

    async def start(self) -> int:
        """Bind and start serving; every service reports SERVING. Returns the bound port."""
        # Outermost first: the metrics time and see every answer (a refusal by auth included), inside the span.
        server = grpc.aio.server(
            interceptors=[RpcMetricsInterceptor(), *tracing.server_interceptors(), *self.interceptors],
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
            ],
        )
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [b.full_name for b in self.bindings]
        reflection.enable_server_reflection([*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{self.host}:{self.port}"
        if self.tls is None:
            self.bound_port = server.add_insecure_port(address)
        else:
            self.bound_port = server.add_secure_port(address, self.tls.server_credentials(internal=self.internal))
        if self.bound_port == 0:
            raise OSError(f"{self.name}: cannot bind {self.host}:{self.port}")
        await server.start()
        self._server = server
        await self.set_serving(True)
        _log.info("serving", server=self.name, port=self.bound_port, services=names, tls=self.tls is not None)
        return self.bound_port

    async def set_serving(self, serving: bool) -> None:
        """Report every service (and the overall "" entry) as SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *(b.full_name for b in self.bindings)):
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish within the grace period, then close."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        _log.info("draining", server=self.name, grace_seconds=self.grace_seconds)
        await self._server.stop(self.grace_seconds)
        self._server = None
        _log.info("stopped", server=self.name)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def wait_for_shutdown_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def binding(pb2: Any, pb2_grpc: Any, service_name: str, servicer: Any | None = None) -> ServiceBinding:
    """Bind `servicer` to the service `service_name` of a generated module pair.

    Without a servicer, the service is still offered (listed by reflection, authenticated) and every method
    answers `UNIMPLEMENTED` through the error mapping.
    """
    from kalcifer_common.rpc.errors import map_errors

    if servicer is None:
        base = getattr(pb2_grpc, f"{service_name}Servicer")
        servicer = map_errors(type(f"Unimplemented{service_name}", (base,), {}))()
    return ServiceBinding(
        descriptor=pb2.DESCRIPTOR.services_by_name[service_name],
        servicer=servicer,
        add_to_server=getattr(pb2_grpc, f"add_{service_name}Servicer_to_server"),
    )
