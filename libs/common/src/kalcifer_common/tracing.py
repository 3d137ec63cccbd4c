"""OpenTelemetry traces: one span per RPC, the W3C trace context carried from the API to the engine and on to the
scheduler in gRPC metadata (`traceparent`), recorded only when an exporter is configured.

`configure_tracing` installs the process's tracer provider, by the standard variables:

- `OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` with the
  exporter unset: batches go to the collector over OTLP/gRPC (the exporter reads its own `OTEL_EXPORTER_OTLP_*`
  variables). A collector that does not answer costs failed exports in a background thread, never a call.
- `OTEL_TRACES_EXPORTER=console`: one JSON line per span on stderr, beside the logs (debugging, tests).
- unset or `none`: no provider, and nothing traced at all.

With a provider, every server continues the caller's context (`server_interceptors`, installed by
`rpc.server.GrpcServer`) and every internal channel carries the current one on (`client_interceptors`, installed
by `rpc.clients.internal_channel`), both from `opentelemetry-instrumentation-grpc`. Without one, neither is
installed: about 30 µs a call that a process tracing nothing should not pay (a caller's context then stops there,
so turn traces on in every service). Health checks and reflection are never traced (a probe every few seconds
would drown the traces that matter).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from kalcifer_common.logging import get_logger
from kalcifer_common.settings import CommonSettings

_log = get_logger(__name__)
_tracer = trace.get_tracer(__name__)

# Links a batch's span keeps to the calls it served beyond the first (its parent); the SDK keeps 128 at most.
MAX_LINKS = 64

# grpc.health.v1 and grpc.reflection.*: probes and tooling, not work.
_TRACED = filters.negate(filters.service_prefix("grpc."))


def chosen_exporter(settings: CommonSettings) -> str:
    """Where this process's spans go: "otlp", "console" or "none" (see the module docstring)."""
    if settings.otel_traces_exporter:
        return settings.otel_traces_exporter
    if settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint:
        return "otlp"
    return "none"


def tracer_provider(settings: CommonSettings, *, service_name: str) -> TracerProvider | None:
    """A tracer provider exporting where the settings say, or None when spans go nowhere."""
    exporter = chosen_exporter(settings)
    if exporter == "none":
        return None
    # Shut down by `Tracing.shutdown`, within a bound: the SDK's own exit hook could wait 30 s for a collector.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False)
    if exporter == "console":
        # Synchronous, on the thread that ends the span: lines never interleave with the logs on stderr.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr, formatter=_json_line)))
    else:
        # Imported here: only a process that exports over OTLP loads its protobuf and gRPC exporter.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


@dataclass(frozen=True)
class Tracing:
    """This process's tracer provider (None: nothing is recorded)."""

    provider: TracerProvider | None

    async def shutdown(self, *, timeout_seconds: float = 5.0) -> None:
        """Export what is buffered and stop, waiting at most `timeout_seconds` (a collector that does not answer
        must not hold up a shutdown); the flush goes on in a daemon thread that dies with the process."""
        if self.provider is None:
            return
        provider, loop, flushed = self.provider, asyncio.get_running_loop(), asyncio.Event()

        def flush() -> None:
            try:
                provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                    loop.call_soon_threadsafe(flushed.set)

        threading.Thread(target=flush, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(flushed.wait(), timeout_seconds)
        except TimeoutError:
            _log.warning("spans not flushed before shutdown", timeout_seconds=timeout_seconds)


def configure_tracing(settings: CommonSettings, *, service_name: str) -> Tracing:
    """Install the process's tracer provider (`tracer_provider`); call once, before any server or internal channel
    is made (they trace only when it is installed)."""
    provider = tracer_provider(settings, service_name=service_name)
    if provider is not None:
        trace.set_tracer_provider(provider)
        _log.info("tracing", exporter=chosen_exporter(settings), service_name=service_name)
    return Tracing(provider)


def tracing_installed() -> bool:
    """Whether `configure_tracing` installed a provider in this process."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def server_interceptors() -> list[Any]:
    """The server side, when tracing: a SERVER span per call, child of the caller's context from its metadata."""
    if not tracing_installed():
        return []
    return [cast(Callable[..., Any], aio_server_interceptor)(filter_=_TRACED)]


def client_interceptors() -> list[Any]:
    """The client side, when tracing (one interceptor per call kind): a CLIENT span per call, injected into its
    metadata."""
    if not tracing_installed():
        return []
    return list(cast(Callable[..., Sequence[Any]], aio_client_interceptors)(filter_=_TRACED))


@contextlib.contextmanager
def batch_span(name: str, origins: Sequence[trace.SpanContext], size: int) -> Iterator[None]:
    """The current span while work shared by several calls runs (one transaction, one RPC for many): a child of
    the first call's span among `origins` (the calls' spans, in arrival order), linked to the others' (up to
    `MAX_LINKS`), so that every call's trace reaches the work done for it; `size` is the batch's
    `kalcifer.batch.size`. With no valid origin, a trace of its own."""
    valid = [origin for origin in origins if origin.is_valid]
    parent = trace.set_span_in_context(trace.NonRecordingSpan(valid[0])) if valid else Context()
    links = [trace.Link(origin) for origin in valid[1 : MAX_LINKS + 1]]
    with _tracer.start_as_current_span(name, context=parent, links=links) as span:
        span.set_attribute("kalcifer.batch.size", size)
        yield
