"""`call_webhook` end to end (SPEC 6.10): the scheduler calls the node's own url out of every run, retries under
one `Idempotency-Key`, survives a SIGKILL mid-call, and the JSON answer drives the rest of the path.

This module runs its own suite: every pool holds ONE connection (DB_POOL_SIZE=1, no overflow), so a run or a call
that held a connection while the endpoint takes its time would stall everything else; and only 127.0.0.1 is
allowlisted for outbound calls.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from kalcifer.v1 import (
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    node_type_pb2,
    node_type_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.endpoint import Endpoint, Reply, running_endpoint
from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, scratch_suite
from tests.support.tenants import new_tenant

COMPLETED, FAILED, WAITING = (
    instance_pb2.INSTANCE_STATUS_COMPLETED,
    instance_pb2.INSTANCE_STATUS_FAILED,
    instance_pb2.INSTANCE_STATUS_WAITING,
)
LEASE_SECONDS = 2


@pytest.fixture(scope="module")
def calls_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The three services on their own database and Redis db, one connection per pool."""
    settings = {
        "OUTBOUND_ALLOWLIST": "127.0.0.1",
        "OUTBOUND_BACKOFF_SECONDS": "0.2",
        "DB_POOL_SIZE": "1",
        "DB_MAX_OVERFLOW": "0",
        "CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
        "SWEEP_INTERVAL_SECONDS": "0.5",
    }
    log_dir: Path = tmp_path_factory.mktemp("calls-suite-logs")
    with scratch_suite(servers, log_dir, settings) as suite:
        yield suite


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    """The tenant's HTTP endpoint."""
    with running_endpoint() as running:
        yield running


class Caller:
    """One tenant's stubs on the calls suite."""

    def __init__(self, suite: Suite) -> None:
        self.auth = new_tenant(suite, f"calls-{uuid.uuid4().hex[:6]}").auth
        self.channel = grpc.insecure_channel(suite.address("api"))
        self.flows = flow_pb2_grpc.FlowServiceStub(self.channel)
        self.triggers = trigger_pb2_grpc.TriggerServiceStub(self.channel)
        self.instances = instance_pb2_grpc.InstanceServiceStub(self.channel)

    def active_flow(self, nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str]]) -> str:
        graph = flow_pb2.FlowGraph(
            nodes=[flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in nodes],
            edges=[flow_pb2.GraphEdge(source=s, target=t, branch=b) for s, t, b in edges],
        )
        created = self.flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=f"f-{uuid.uuid4().hex[:6]}"), graph=graph),
            metadata=self.auth,
        )
        self.flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=self.auth)
        flow_id: str = created.id
        return flow_id

    def start(self, flow_id: str, participant: str, context: dict[str, Any] | None = None) -> str:
        started = self.triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(
                flow_id=flow_id, participant_id=participant, context=dict_to_struct(context or {})
            ),
            metadata=self.auth,
        )
        instance_id: str = started.instance_id
        return instance_id

    def instance(self, instance_id: str) -> instance_pb2.FlowInstance:
        return self.instances.GetInstance(instance_pb2.GetInstanceRequest(id=instance_id), metadata=self.auth)

    def finished(self, instance_id: str, within: float = 40) -> instance_pb2.FlowInstance:
        return eventually_sync(
            lambda: self.instance(instance_id),
            until=lambda found: found.status in (COMPLETED, FAILED, instance_pb2.INSTANCE_STATUS_EXITED),
            within=within,
            interval=0.1,
            what=f"instance {instance_id} finished",
        )

    def steps(self, instance_id: str) -> list[dict[str, Any]]:
        listed = self.instances.ListExecutionSteps(
            instance_pb2.ListExecutionStepsRequest(instance_id=instance_id), metadata=self.auth
        )
        return [MessageToDict(step, preserving_proto_field_name=True) for step in listed.steps]


@pytest.fixture(scope="module")
def caller(calls_suite: Suite) -> Iterator[Caller]:
    """A tenant of the calls suite."""
    made = Caller(calls_suite)
    yield made
    made.channel.close()


def _call_flow(caller: Caller, call: dict[str, Any]) -> str:
    """start -> call (call_webhook) -> done (exit)."""
    return caller.active_flow(
        [
            ("start", "event_entry", {"event_type": "go"}),
            ("call", "call_webhook", call),
            ("done", "exit", {}),
        ],
        [("start", "call", ""), ("call", "done", "")],
    )


def _one_step(steps: list[dict[str, Any]], node_id: str) -> dict[str, Any]:
    [step] = [step for step in steps if step["node_id"] == node_id]
    return step


def test_the_call_carries_its_templated_request_and_its_answer_routes_the_path(
    caller: Caller, endpoint: Endpoint
) -> None:
    endpoint.script(default=Reply(200, {"score": 80, "tier": "gold"}))
    flow_id = caller.active_flow(
        [
            ("start", "event_entry", {"event_type": "signup"}),
            (
                "call",
                "call_webhook",
                {
                    "url": endpoint.url("/score/{{ _participant_id }}"),
                    "method": "PUT",
                    "headers": {"X-Plan": "{{ plan }}"},
                    "body": {"who": "{{ _participant_id }}", "plan": "{{ plan }}", "fixed": 3},
                },
            ),
            ("route", "condition", {"field": "accumulated.call.score", "operator": "gt", "value": 50}),
            ("hot", "exit", {"reason": "hot"}),
            ("cold", "exit", {"reason": "cold"}),
        ],
        [("start", "call", ""), ("call", "route", ""), ("route", "hot", "true"), ("route", "cold", "false")],
    )
    participant = f"p-{uuid.uuid4().hex[:8]}"

    instance_id = caller.start(flow_id, participant, {"plan": "pro"})
    finished = caller.finished(instance_id)

    [request] = endpoint.requests_to(f"/score/{participant}")
    assert request.method == "PUT"
    assert request.headers["x-plan"] == "pro"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"]
    assert request.json() == {"who": participant, "plan": "pro", "fixed": 3}
    assert finished.status == COMPLETED
    assert MessageToDict(finished.context)["accumulated"]["call"] == {"score": 80, "tier": "gold"}
    steps = caller.steps(instance_id)
    assert _one_step(steps, "call")["output"] == {"score": 80, "tier": "gold"}
    assert _one_step(steps, "route")["branch"] == "true"
    assert [step["node_id"] for step in steps if step["node_id"] in ("hot", "cold")] == ["hot"]
    assert all(step["status"] != "STEP_STATUS_WAITING" for step in steps)


def test_a_500_is_retried_once_with_the_same_idempotency_key(caller: Caller, endpoint: Endpoint) -> None:
    endpoint.script(Reply(500), default=Reply(200, {"ok": True}))
    flow_id = _call_flow(caller, {"url": endpoint.url("/flaky")})

    instance_id = caller.start(flow_id, f"p-{uuid.uuid4().hex[:8]}")
    finished = caller.finished(instance_id)

    first, second = endpoint.requests_to("/flaky")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.body == second.body
    assert finished.status == COMPLETED
    assert _one_step(caller.steps(instance_id), "call")["output"] == {"ok": True}


def test_an_endpoint_that_never_answers_fails_the_step_at_the_deadline_while_other_runs_go_on(
    caller: Caller, endpoint: Endpoint
) -> None:
    endpoint.script(Reply(hang=True))
    stuck_flow = _call_flow(caller, {"url": endpoint.url("/silent"), "timeout": "6s"})
    timer_flow = caller.active_flow(
        [("start", "event_entry", {"event_type": "go"}), ("pause", "wait", {"duration": "1s"}), ("done", "exit", {})],
        [("start", "pause", ""), ("pause", "done", "")],
    )

    stuck = caller.start(stuck_flow, f"p-{uuid.uuid4().hex[:8]}")
    eventually_sync(lambda: endpoint.requests_to("/silent"), within=10, what="the call reached the endpoint")
    other = caller.start(timer_flow, f"p-{uuid.uuid4().hex[:8]}")
    done = caller.finished(other, within=5)
    # With one connection per pool, the timer's run, its arming, its claim and its resume all went through while
    # the call was still open: neither the engine nor the scheduler held a connection during it.
    assert done.status == COMPLETED
    assert caller.instance(stuck).status == WAITING

    failed = caller.finished(stuck)
    assert failed.status == FAILED
    took = failed.end_time.ToDatetime() - failed.enter_time.ToDatetime()
    assert 5.5 <= took.total_seconds() <= 15
    step = _one_step(caller.steps(stuck), "call")
    assert step["status"] == "STEP_STATUS_FAILED"
    assert step["error"].endswith("no answer from 127.0.0.1")
    endpoint.release()


def test_a_webhook_node_type_is_called_out_of_the_run_and_its_answer_picks_the_branch(
    caller: Caller, endpoint: Endpoint
) -> None:
    endpoint.script(default=Reply(200, {"result": "branched", "branch": "hot", "output": {"score": 91}}))
    node_types = node_type_pb2_grpc.NodeTypeServiceStub(caller.channel)
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(
            node_type=node_type_pb2.NodeType(
                key="score_lead",
                category=node_type_pb2.NODE_CATEGORY_CONDITION,
                config_schema=dict_to_struct({"type": "object"}),
                branches=["hot", "cold"],
                endpoint_url=endpoint.url("/score-lead"),
            )
        ),
        metadata=caller.auth,
    )
    flow_id = caller.active_flow(
        [
            ("start", "event_entry", {"event_type": "go"}),
            ("score", "score_lead", {"threshold": 3}),
            ("hot", "exit", {}),
            ("cold", "exit", {}),
        ],
        [("start", "score", ""), ("score", "hot", "hot"), ("score", "cold", "cold")],
    )
    participant = f"p-{uuid.uuid4().hex[:8]}"

    finished = caller.finished(caller.start(flow_id, participant))

    [request] = endpoint.requests_to("/score-lead")
    assert request.json()["config"] == {"threshold": 3}
    assert request.json()["participant_id"] == participant
    assert request.headers["idempotency-key"]
    assert finished.status == COMPLETED
    steps = caller.steps(finished.id)
    assert _one_step(steps, "score")["output"] == {"branch": "hot", "score": 91}
    assert [step["node_id"] for step in steps if step["node_id"] in ("hot", "cold")] == ["hot"]


@pytest.mark.parametrize("url", ["http://127.0.0.2:9/internal", "http://169.254.169.254/latest/meta-data/"])
def test_a_call_to_an_address_not_allowlisted_fails_as_an_unreachable_host_would(
    calls_suite: Suite, caller: Caller, url: str
) -> None:
    refused = caller.finished(caller.start(_call_flow(caller, {"url": url}), f"p-{uuid.uuid4().hex[:8]}"))
    closed = caller.finished(
        caller.start(_call_flow(caller, {"url": "http://127.0.0.1:9/closed"}), f"p-{uuid.uuid4().hex[:8]}")
    )

    host = url.split("/")[2].split(":")[0]
    assert (refused.status, closed.status) == (FAILED, FAILED)
    refused_error = _one_step(caller.steps(refused.id), "call")["error"]
    closed_error = _one_step(caller.steps(closed.id), "call")["error"]
    # The same words and the same number of attempts: no oracle of what lies behind the firewall.
    assert refused_error == f"the call failed after 3 attempt(s): no answer from {host}"
    assert closed_error == "the call failed after 3 attempt(s): no answer from 127.0.0.1"
    # The operator's log says why.
    assert "OUTBOUND_ALLOWLIST" in calls_suite.log_of("scheduler")


def test_a_sigkill_mid_call_makes_the_call_again_with_the_same_key_and_continues_once(
    calls_suite: Suite, caller: Caller, endpoint: Endpoint
) -> None:
    endpoint.script(Reply(hang=True), default=Reply(200, {"ok": True}))
    flow_id = _call_flow(caller, {"url": endpoint.url("/killed"), "timeout": "5s"})
    instance_id = caller.start(flow_id, f"p-{uuid.uuid4().hex[:8]}")
    eventually_sync(lambda: endpoint.requests_to("/killed"), within=10, what="the first call reached the endpoint")

    calls_suite.stop("scheduler", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    calls_suite.start("scheduler")
    finished = caller.finished(instance_id, within=30)

    first, second = endpoint.requests_to("/killed")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert finished.status == COMPLETED
    steps = caller.steps(instance_id)
    assert _one_step(steps, "call")["output"] == {"ok": True}
    assert _one_step(steps, "done")["status"] == "STEP_STATUS_COMPLETED"
    # The second call waited for the killed claim's lease (the call's deadline plus the lease) to run out.
    assert time.monotonic() - killed_at < 5 + LEASE_SECONDS + 10
    endpoint.release()
