"""Traces through the three services: a caller's W3C `traceparent` reaches the API, the engine and the scheduler,
each span a child of the one that called it; where calls are served together (the API's StartInstances, the
engine's group commit, the scheduler batch) the batch's span is a child of its first call's and links to the
others'. Spans are read back from the services' logs, where `OTEL_TRACES_EXPORTER=console` writes them (the OTLP
exporter is the same SDK with another destination)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import grpc
import pytest
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, trigger_pb2, trigger_pb2_grpc
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually_sync
from tests.support.processes import SERVICE_NAMES, Suite, scratch_suite
from tests.support.spans import Span, spans_in
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

TRIGGER = "/kalcifer.v1.TriggerService/TriggerFlow"
START = "/kalcifer.engine.v1.EngineService/StartInstances"
ARM = "/kalcifer.scheduler.v1.SchedulerService/ScheduleResumes"
STARTS_BATCH = "StartInstances batch"
GROUP = "group commit: StartInstance batch"


@pytest.fixture(scope="module")
def traced(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """A suite of its own whose services write their spans beside their logs; one StartInstances call out at a
    time, so that concurrent TriggerFlow calls are sure to share one."""
    settings = {"OTEL_TRACES_EXPORTER": "console", "ENGINE_STARTS_IN_FLIGHT": "1"}
    with scratch_suite(servers, tmp_path_factory.mktemp("tracing-logs"), settings) as suite:
        yield suite


def _one(spans: list[Span], name: str, kind: str) -> Span:
    found = [span for span in spans if span.name == name and span.kind == f"SpanKind.{kind}"]
    assert len(found) == 1, f"expected one {kind} span {name}, got {found}"
    return found[0]


def _timer_flow(suite: Suite, auth: tuple[tuple[str, str], ...], name: str) -> str:
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="go", type="event_entry", config=dict_to_struct({"event_type": "go"})),
            flow_pb2.GraphNode(id="hold", type="wait", config=dict_to_struct({"duration": "50s"})),
        ],
        edges=[flow_pb2.GraphEdge(source="go", target="hold")],
    )
    with grpc.insecure_channel(suite.address("api")) as channel:
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name), graph=graph), metadata=auth)
        flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)
    return str(flow.id)


def test_a_callers_trace_goes_on_through_api_engine_and_scheduler(traced: Suite) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    tenant = new_tenant(traced, "traced")
    flow_id = _timer_flow(traced, tenant.auth, "traced")
    with grpc.insecure_channel(traced.address("api")) as channel:
        trigger_pb2_grpc.TriggerServiceStub(channel).TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id="ada"),
            metadata=(*tenant.auth, ("traceparent", f"00-{trace_id}-{caller_span}-01")),
        )

    def traced_spans() -> dict[str, list[Span]]:
        return {
            service: [span for span in spans_in(traced.log_of(service)) if span.trace_id == f"0x{trace_id}"]
            for service in SERVICE_NAMES
        }

    # The scheduler's span is the last to end (the engine arms the timer after its run commits).
    spans = eventually_sync(
        traced_spans,
        until=lambda found: any(span.name == ARM for span in found["scheduler"]),
        within=30,
        interval=0.2,
        what=f"the scheduler's span of trace {trace_id}",
    )
    api_server = _one(spans["api"], TRIGGER, "SERVER")
    starts = _one(spans["api"], STARTS_BATCH, "INTERNAL")
    api_client = _one(spans["api"], START, "CLIENT")
    engine_server = _one(spans["engine"], START, "SERVER")
    group = _one(spans["engine"], GROUP, "INTERNAL")
    batch = _one(spans["engine"], "scheduler batch", "INTERNAL")
    engine_client = _one(spans["engine"], ARM, "CLIENT")
    scheduler_server = _one(spans["scheduler"], ARM, "SERVER")

    assert api_server.parent_id == f"0x{caller_span}"
    assert starts.parent_id == api_server.span_id
    assert api_client.parent_id == starts.span_id
    assert engine_server.parent_id == api_client.span_id
    assert group.parent_id == engine_server.span_id
    assert batch.parent_id == group.span_id
    assert engine_client.parent_id == batch.span_id
    assert scheduler_server.parent_id == engine_client.span_id
    assert scheduler_server.attributes["rpc.grpc.status_code"] == 0


async def _trigger_at_once(suite: Suite, auth: tuple[tuple[str, str], ...], flow_id: str, traces: list[str]) -> None:
    async with grpc.aio.insecure_channel(suite.address("api")) as channel:
        stub = trigger_pb2_grpc.TriggerServiceStub(channel)
        await asyncio.gather(
            *(
                stub.TriggerFlow(
                    trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id=f"p{n}"),
                    metadata=(*auth, ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01")),
                )
                for n, trace_id in enumerate(traces)
            )
        )


def test_every_start_served_in_a_shared_call_is_linked_from_it(traced: Suite) -> None:
    tenant = new_tenant(traced, "batched")
    flow_id = _timer_flow(traced, tenant.auth, "batched")
    traces = [secrets.token_hex(16) for _ in range(16)]
    asyncio.run(_trigger_at_once(traced, tenant.auth, flow_id, traces))

    def api_spans() -> list[Span]:
        return spans_in(traced.log_of("api"))

    wanted = {f"0x{trace_id}" for trace_id in traces}
    spans = eventually_sync(
        api_spans,
        until=lambda found: wanted <= {span.trace_id for span in found if span.name == TRIGGER},
        within=30,
        interval=0.2,
        what="the API's TriggerFlow spans of all 16 traces",
    )
    servers = {span.trace_id: span for span in spans if span.name == TRIGGER and span.trace_id in wanted}
    batches = [span for span in spans if span.name == STARTS_BATCH and span.trace_id in wanted]
    clients = {span.parent_id: span for span in spans if span.name == START and span.kind == "SpanKind.CLIENT"}
    # 16 calls at once, one StartInstances out at a time: some shared a call.
    assert len(batches) < len(traces)
    assert any(batch.links for batch in batches)
    assert sum(batch.attributes["kalcifer.batch.size"] for batch in batches) == len(traces)
    for trace_id, server in servers.items():
        # Each start's trace reaches the StartInstances call that served it: as its parent or through a link.
        serving = [
            batch for batch in batches if batch.parent_id == server.span_id or (trace_id, server.span_id) in batch.links
        ]
        assert len(serving) == 1, f"trace {trace_id}: served by {serving}"
        assert serving[0].span_id in clients, f"trace {trace_id}: no StartInstances call under its batch"


def test_health_checks_are_not_traced(traced: Suite) -> None:
    # Every service has been probed (each started only once SERVING; the scheduler probes the engine every 2 s).
    for service in SERVICE_NAMES:
        spans = spans_in(traced.log_of(service))
        assert not [span.name for span in spans if span.name.startswith("/grpc.")], service
