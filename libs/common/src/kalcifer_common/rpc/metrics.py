"""Prometheus metrics of every RPC a server handles: latency and count by service, method and status code.

`RpcMetricsInterceptor` wraps the handler of each call, unary or streaming, and records the code the client is
answered with: OK when the handler returns, the code it set (`context.set_code`) or aborted with (`context.abort`,
which is how every mapped error leaves a servicer, `rpc.errors`), DEADLINE_EXCEEDED or CANCELLED when the call was
cut off, UNKNOWN for an exception gRPC itself turns into a status. Labels are the method's names and the code only:
never a tenant or any other value a caller chooses, so the series are bounded by the methods the server offers
(calls to a method it does not offer get no handler and are not recorded).

The metrics are process-wide (`PROCESS_RPC_METRICS`, in the default registry), as a process has one /metrics
(`kalcifer_common.metrics`); a test hands the interceptor its own (`RpcMetrics.create`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor

_LABELS = ("service", "method", "code")
# From a cached key lookup to a run that writes a few hundred rows, and the deadlines beyond.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class RpcMetrics:
    """The two RPC metrics, registered in one registry."""

    handling_seconds: Histogram
    handled: Counter
    # The labelled series of each (service, method, code) seen: `labels()` costs more than the recording itself.
    _series: dict[tuple[str, str, str], tuple[Any, Any]] = field(default_factory=dict)

    def record(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """One call answered with `code` after `seconds`."""
        key = (service, method, code.name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.handling_seconds.labels(*key), self.handled.labels(*key))
        series[0].observe(seconds)
        series[1].inc()

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RpcMetrics:
        """The metrics, registered in `registry` (once per registry: names are unique in one)."""
        return cls(
            handling_seconds=Histogram(
                "kalcifer_rpc_server_handling_seconds",
                "Time from a call's handler starting to its answer, by gRPC service, method and status code.",
                _LABELS,
                buckets=_BUCKETS,
                registry=registry,
            ),
            handled=Counter(
                "kalcifer_rpc_server_handled",
                "Calls answered, by gRPC service, method and status code.",
                _LABELS,
                registry=registry,
            ),
        )


PROCESS_RPC_METRICS = RpcMetrics.create(REGISTRY)

_Context = grpc.aio.ServicerContext[Any, Any]
_Behaviour = Callable[..., Any]
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class RpcMetricsInterceptor(_ServerInterceptor):
    """Records `RpcMetrics` for every call to a method the server offers."""

    def __init__(self, metrics: RpcMetrics = PROCESS_RPC_METRICS) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = str(handler_call_details.method).lstrip("/").rpartition("/")
        record = _Recorder(self._metrics, service, method)
        wrapped: Any = handler  # a namedtuple: `_replace` makes the same handler around another behaviour
        if handler.unary_unary is not None:
            wrapped = wrapped._replace(unary_unary=record.unary(handler.unary_unary))
        elif handler.stream_unary is not None:
            wrapped = wrapped._replace(stream_unary=record.unary(handler.stream_unary))
        elif handler.unary_stream is not None:
            wrapped = wrapped._replace(unary_stream=record.streaming(handler.unary_stream))
        elif handler.stream_stream is not None:
            wrapped = wrapped._replace(stream_stream=record.streaming(handler.stream_stream))
        return cast("grpc.RpcMethodHandler[Any, Any]", wrapped)


class _Recorder:
    """Wraps one method's behaviour so each call records its latency and code."""

    def __init__(self, metrics: RpcMetrics, service: str, method: str) -> None:
        self._metrics = metrics
        self._service = service
        self._method = method

    def unary(self, behaviour: _Behaviour) -> _Behaviour:
        """A behaviour that answers one response (its request may stream)."""

        async def recorded(request: Any, context: _Context) -> Any:
            started, budget = time.perf_counter(), context.time_remaining()
            code = grpc.StatusCode.UNKNOWN
            try:
                answer = behaviour(request, context)
                if inspect.isawaitable(answer):
                    answer = await answer
                code = answered_code(context, grpc.StatusCode.OK)
                return answer
            except grpc.aio.AbortError:
                code = answered_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = cut_off_code(context, budget)
                raise
            finally:
                self._record(code, started)

        return recorded

    def streaming(self, behaviour: _Behaviour) -> _Behaviour:
        """A behaviour that answers a stream: an async generator, or a coroutine that writes (`context.write`)."""

        async def recorded(request: Any, context: _Context) -> AsyncIterator[Any]:
            started, budget = time.perf_counter(), context.time_remaining()
            code = grpc.StatusCode.UNKNOWN
            try:
                answers = behaviour(request, context)
                if inspect.isawaitable(answers):
                    await answers
                else:
                    async for answer in answers:
                        yield answer
                code = answered_code(context, grpc.StatusCode.OK)
            except grpc.aio.AbortError:
                code = answered_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = cut_off_code(context, budget)
                raise
            finally:
                self._record(code, started)

        return recorded

    def _record(self, code: grpc.StatusCode, started: float) -> None:
        self._metrics.record(self._service, self._method, code, time.perf_counter() - started)


def answered_code(context: _Context, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the call ended with: what the handler set or aborted with, else `default`."""
    code: Any = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return default


def cut_off_code(context: _Context, budget: float | None) -> grpc.StatusCode:
    """Why a handler was cancelled: its deadline passed (the client sees DEADLINE_EXCEEDED), else the client or
    the server's shutdown cancelled it.

    The server's deadline is the client's shifted by the request's transit: when the client's runs out first, its
    cancellation arrives with a little of the server's left. So a call with a deadline (`budget`: what was left
    when its handler started) counts as past it once less than a tenth of the budget (at least 50 ms) remains.
    """
    remaining = context.time_remaining()
    if remaining is not None and budget is not None and remaining <= max(0.05, budget / 10):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
