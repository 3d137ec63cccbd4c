"""Each service's Prometheus /metrics, scraped as Prometheus scrapes it (`GET /metrics`, parsed by
prometheus-client's own parser), before and after a small load through the public API: the named metrics are
there, and they moved by what the load did.

The suite is the module's own (its database and Redis db too), so every figure it shows comes from this load.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct
from prometheus_client.parser import text_string_to_metric_families

from tests.support.eventually import eventually_sync
from tests.support.grpcurl import grpcurl
from tests.support.processes import SERVICE_NAMES, Suite, scratch_suite
from tests.support.rpc import code_of
from tests.support.spans import spans_in
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

PARTICIPANTS = ("ada", "bob", "cy")
FINISHERS = ("dee", "eve")
RPC_HANDLED = "kalcifer_rpc_server_handled_total"
RPC_SECONDS_COUNT = "kalcifer_rpc_server_handling_seconds_count"


@dataclass(frozen=True)
class Scrape:
    """One scrape of one service: every sample by its name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def of(cls, url: str) -> Scrape:
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = answer.read().decode()
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return cls(samples)

    def has(self, name: str, /, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def value(self, name: str, /, **labels: str) -> float:
        """The sample's value; a sample that is not there fails the test, naming it."""
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}"
        return self.samples[key]

    def total(self, name: str, /, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (found, have), value in self.samples.items() if found == name and wanted <= have)


def rpc(service: str, method: str, code: str = "OK") -> dict[str, str]:
    return {"service": service, "method": method, "code": code}


@pytest.fixture(scope="module")
def observed(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """A suite of its own whose gauges refresh often (the default is every 10 s)."""
    settings = {"METRICS_REFRESH_SECONDS": "0.2"}
    with scratch_suite(servers, tmp_path_factory.mktemp("metrics-logs"), settings) as suite:
        yield suite


Nodes = list[tuple[str, str, dict[str, object]]]
Edges = list[tuple[str, str, str]]


def _flow(
    flows: flow_pb2_grpc.FlowServiceStub, auth: tuple[tuple[str, str]], name: str, nodes: Nodes, edges: Edges
) -> str:
    """An active flow of these nodes and (source, target, branch) edges."""
    graph = flow_pb2.FlowGraph(
        nodes=[flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in nodes],
        edges=[flow_pb2.GraphEdge(source=s, target=t, branch=b) for s, t, b in edges],
    )
    created = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name), graph=graph), metadata=auth)
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=auth)
    flow_id: str = created.id
    return flow_id


def test_every_service_shows_its_metrics_moving_under_a_small_load(observed: Suite) -> None:
    before = {service: Scrape.of(observed.metrics_url(service)) for service in SERVICE_NAMES}
    tenant = new_tenant(observed, "metrics")
    with grpc.insecure_channel(observed.address("api")) as channel:
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        template_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(id="welcome", channel="email", subject="Hi", body="Hello")
            ),
            metadata=tenant.auth,
        )
        for name in PARTICIPANTS:
            customer_pb2_grpc.CustomerServiceStub(channel).UpsertCustomer(
                customer_pb2.UpsertCustomerRequest(
                    customer=customer_pb2.Customer(external_id=name, email=f"{name}@example.com")
                ),
                metadata=tenant.auth,
            )
        # An email, a short timer, an event, then a timer that stays armed in Redis for the rest of the test.
        journey = _flow(
            flows,
            tenant.auth,
            "journey",
            [
                ("go", "event_entry", {"event_type": "go"}),
                ("mail", "send_email", {"template_id": "welcome"}),
                ("short", "wait", {"duration": "1s"}),
                ("ask", "wait_for_event", {"event_type": "confirm", "timeout": "1h"}),
                ("hold", "wait", {"duration": "50s"}),
                ("end", "exit", {}),
            ],
            [
                ("go", "mail", ""),
                ("mail", "short", ""),
                ("short", "ask", ""),
                ("ask", "hold", "event_received"),
                ("ask", "end", "timed_out"),
                ("hold", "end", ""),
            ],
        )
        quick = _flow(
            flows,
            tenant.auth,
            "quick",
            [("go", "event_entry", {"event_type": "go"}), ("tag", "add_tag", {"tag": "seen"}), ("end", "exit", {})],
            [("go", "tag", ""), ("tag", "end", "")],
        )

        for name in PARTICIPANTS:
            triggers.TriggerFlow(
                trigger_pb2.TriggerFlowRequest(flow_id=journey, participant_id=name), metadata=tenant.auth
            )
        for name in FINISHERS:
            triggers.TriggerFlow(
                trigger_pb2.TriggerFlowRequest(flow_id=quick, participant_id=name), metadata=tenant.auth
            )
        # The short timers fire (the scheduler resumes each instance onto its wait_for_event)...
        eventually_sync(
            lambda: Scrape.of(observed.metrics_url("scheduler")).total("kalcifer_scheduler_timer_lag_seconds_count"),
            until=lambda fired: fired >= len(PARTICIPANTS),
            within=60,
            interval=0.2,
            what="the three short timers fired",
        )
        # ... then an event resumes each one onto its long wait.
        for name in PARTICIPANTS:
            resumed = events.IngestEvent(
                event_pb2.IngestEventRequest(participant_id=name, event_type="confirm"), metadata=tenant.auth
            )
            assert resumed.resumed == 1
        # Refusals are counted with the code the caller got: one from a servicer, one from the auth interceptor.
        missing = flow_pb2.GetFlowRequest(id=str(uuid.uuid4()))
        assert code_of(lambda: flows.GetFlow(missing, metadata=tenant.auth)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: flows.GetFlow(missing)) == grpc.StatusCode.UNAUTHENTICATED
    # A streaming RPC: grpcurl lists the services through server reflection.
    assert grpcurl(observed.address("api"), "list").returncode == 0

    engine_now = eventually_sync(
        lambda: Scrape.of(observed.metrics_url("engine")),
        until=lambda now: (
            now.value("kalcifer_engine_instances", status="waiting") == len(PARTICIPANTS)
            and now.value("kalcifer_engine_instances", status="completed") == len(FINISHERS)
        ),
        within=30,
        interval=0.2,
        what="the instances gauge counting 3 waiting and 2 completed instances",
    )
    scheduler_now = eventually_sync(
        lambda: Scrape.of(observed.metrics_url("scheduler")),
        until=lambda now: (
            now.value("kalcifer_scheduler_armed_timers") >= len(PARTICIPANTS)
            and now.value("kalcifer_scheduler_queue_depth", queue="delayed_resume") >= 1
            and now.value("kalcifer_scheduler_deliveries_total", status="sent")
            - before["scheduler"].value("kalcifer_scheduler_deliveries_total", status="sent")
            == len(PARTICIPANTS)
        ),
        within=30,
        interval=0.2,
        what="the 50 s timers armed in Redis, their bucket jobs queued, and the three emails sent",
    )
    api_now = Scrape.of(observed.metrics_url("api"))

    def moved(of: str, now: Scrape, name: str, /, **labels: str) -> float:
        was = before[of].value(name, **labels) if before[of].has(name, **labels) else 0.0
        return now.value(name, **labels) - was

    # api: every call, by method and code, with its latency.
    trigger = rpc("kalcifer.v1.TriggerService", "TriggerFlow")
    assert moved("api", api_now, RPC_HANDLED, **trigger) == len(PARTICIPANTS) + len(FINISHERS)
    assert moved("api", api_now, RPC_SECONDS_COUNT, **trigger) == len(PARTICIPANTS) + len(FINISHERS)
    assert api_now.value("kalcifer_rpc_server_handling_seconds_sum", **trigger) > 0
    assert moved("api", api_now, RPC_HANDLED, **rpc("kalcifer.v1.EventService", "IngestEvent")) == len(PARTICIPANTS)
    assert moved("api", api_now, RPC_HANDLED, **rpc("kalcifer.v1.FlowService", "GetFlow", "NOT_FOUND")) == 1
    assert moved("api", api_now, RPC_HANDLED, **rpc("kalcifer.v1.FlowService", "GetFlow", "UNAUTHENTICATED")) == 1
    assert api_now.total(RPC_HANDLED, method="ServerReflectionInfo", code="OK") >= 1

    # engine: the API's calls, the runs and their steps, the instances by status.
    # one TriggerFlow at a time: each its own StartInstances call (concurrent ones would share calls)
    start = rpc("kalcifer.engine.v1.EngineService", "StartInstances")
    assert moved("engine", engine_now, RPC_HANDLED, **start) == len(PARTICIPANTS) + len(FINISHERS)
    # Each journey instance ran three times (start, timer, event), each leaving it waiting; each quick one once.
    assert moved("engine", engine_now, "kalcifer_engine_runs_total", status="waiting") >= 3 * len(PARTICIPANTS)
    assert moved("engine", engine_now, "kalcifer_engine_runs_total", status="completed") >= len(FINISHERS)
    assert moved("engine", engine_now, "kalcifer_engine_steps_total", status="completed") >= 3 * len(FINISHERS)
    assert moved("engine", engine_now, "kalcifer_engine_steps_total", status="waiting") >= 3 * len(PARTICIPANTS)

    # scheduler: the engine's batches, the timers' lag, the deliveries (checked above), the queues.
    arm = rpc("kalcifer.scheduler.v1.SchedulerService", "ScheduleResumes")
    assert moved("scheduler", scheduler_now, RPC_HANDLED, **arm) >= 1
    assert scheduler_now.total("kalcifer_scheduler_timer_lag_seconds_count") >= len(PARTICIPANTS)
    assert scheduler_now.total("kalcifer_scheduler_timer_lag_seconds_sum") > 0
    assert scheduler_now.has("kalcifer_scheduler_timer_lag_seconds_bucket", via="timer", le="+Inf")


def test_labels_never_carry_a_tenant(observed: Suite) -> None:
    tenant = new_tenant(observed, "labels")
    for service in SERVICE_NAMES:
        scrape = Scrape.of(observed.metrics_url(service))
        label_values = {value for _, labels in scrape.samples for _, value in labels}
        assert str(tenant.id) not in label_values
        assert all(not _is_uuid(value) for value in label_values), f"{service} labels a sample with an id"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def test_without_an_exporter_no_span_is_written(observed: Suite) -> None:
    # This suite sets no OTEL_* variable; the load above went through every service.
    for service in SERVICE_NAMES:
        assert spans_in(observed.log_of(service)) == [], service
