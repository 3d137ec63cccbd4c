"""Issue #4 end to end through the real `grpcurl` binary, as an operator drives it: a flow that waits for a
purchase is created and activated, a participant is triggered into it, and the instance ends on the
`event_received` branch when the event comes, on the `timed_out` branch when it does not; another tenant's event
resumes nothing and another tenant sees nothing."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.eventually import eventually_sync
from tests.support.grpcurl import GrpcurlResult, grpcurl
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

TIMEOUT_WAIT_SECONDS = 30


@dataclass(frozen=True)
class Caller:
    """One tenant's grpcurl session against the API."""

    address: str
    key: str

    def run(self, method: str, data: Any) -> GrpcurlResult:
        return grpcurl(self.address, f"kalcifer.v1.{method}", data=data, token=self.key)

    def call(self, method: str, data: Any) -> dict[str, Any]:
        """A call that must succeed; its JSON answer."""
        result = self.run(method, data)
        assert result.returncode == 0, f"{method} failed: {result.stderr}"
        body: dict[str, Any] = result.json()
        return body

    def fails(self, method: str, data: Any) -> str:
        """A call that must fail; the status code name grpcurl prints (e.g. "NotFound")."""
        result = self.run(method, data)
        assert result.returncode != 0, f"{method} succeeded: {result.stdout}"
        found = re.search(r"Code: (\w+)", result.stderr)
        assert found, result.stderr
        return found.group(1)


def _tenant(suite: Suite, name: str) -> Caller:
    result = grpcurl(
        suite.address("api"), "kalcifer.v1.TenantService/CreateTenant", data={"name": name}, token=suite.admin_token
    )
    assert result.returncode == 0, result.stderr
    return Caller(suite.address("api"), result.json()["raw_key"])


@pytest.fixture(scope="module")
def shop(suite: Suite) -> Caller:
    return _tenant(suite, "shop")


@pytest.fixture(scope="module")
def intruder(suite: Suite) -> Caller:
    return _tenant(suite, "intruder")


def _graph(timeout: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}},
            {"id": "wait", "type": "wait_for_event", "config": {"event_type": "purchase", "timeout": timeout}},
            {"id": "bought", "type": "goal_reached", "config": {"goal_name": "purchase"}},
            {"id": "gave_up", "type": "exit", "config": {"reason": "no purchase"}},
        ],
        "edges": [
            {"source": "entry", "target": "wait"},
            {"source": "wait", "target": "bought", "branch": "event_received"},
            {"source": "wait", "target": "gave_up", "branch": "timed_out"},
        ],
    }


def _active_flow(caller: Caller, timeout: str) -> str:
    created = caller.call(
        "FlowService/CreateFlow", {"flow": {"name": f"wait for purchase ({timeout})"}, "graph": _graph(timeout)}
    )
    activated = caller.call("FlowService/ActivateFlow", {"id": created["id"]})
    assert activated["status"] == "FLOW_STATUS_ACTIVE"
    return str(created["id"])


def _steps(caller: Caller, instance_id: str) -> list[tuple[str, str]]:
    steps = caller.call("InstanceService/ListExecutionSteps", {"instance_id": instance_id}).get("steps", [])
    return [(step["node_id"], step.get("branch", "")) for step in steps]


def _trigger(caller: Caller, flow_id: str, participant: str) -> str:
    started = caller.call(
        "TriggerService/TriggerFlow", {"flow_id": flow_id, "participant_id": participant, "context": {"plan": "pro"}}
    )
    return str(started["instance_id"])


def test_an_event_resumes_the_wait_and_the_instance_completes_on_event_received(shop: Caller, intruder: Caller) -> None:
    flow_id = _active_flow(shop, "1h")
    participant = f"alice-{uuid.uuid4().hex[:8]}"
    instance_id = _trigger(shop, flow_id, participant)

    waiting = shop.call("InstanceService/GetInstance", {"id": instance_id})
    assert waiting["status"] == "INSTANCE_STATUS_WAITING"
    assert waiting["current_nodes"] == ["wait"]
    assert waiting["context"]["plan"] == "pro"
    assert shop.fails("TriggerService/TriggerFlow", {"flow_id": flow_id, "participant_id": participant}) == (
        "AlreadyExists"
    )

    # The same participant id in another tenant is another person: nothing of the shop's is resumed.
    foreign = intruder.call(
        "EventService/IngestEvent", {"participant_id": participant, "event_type": "purchase", "data": {"sku": "x"}}
    )
    assert foreign.get("resumed", 0) == 0
    assert shop.call("InstanceService/GetInstance", {"id": instance_id})["status"] == "INSTANCE_STATUS_WAITING"

    purchase = {
        "participant_id": participant,
        "event_type": "purchase",
        "data": {"amount": 42},
        "request_id": f"order-{participant}",
    }
    ingested = shop.call("EventService/IngestEvent", purchase)
    assert ingested["resumed"] == 1
    assert not ingested.get("deduplicated", False)

    done = shop.call("InstanceService/GetInstance", {"id": instance_id})
    assert done["status"] == "INSTANCE_STATUS_COMPLETED"
    assert done.get("current_nodes", []) == []
    assert "end_time" in done
    assert done["context"]["event"]["amount"] == 42
    steps = _steps(shop, instance_id)
    assert ("wait", "event_received") in steps
    assert steps[-1][0] == "bought"
    assert "gave_up" not in [node for node, _ in steps]

    replay = shop.call("EventService/IngestEvent", purchase)
    assert replay["event_id"] == ingested["event_id"]
    assert replay["deduplicated"] is True
    assert len(_steps(shop, instance_id)) == len(steps)


def test_without_the_event_the_instance_ends_on_timed_out(shop: Caller) -> None:
    flow_id = _active_flow(shop, "2s")
    instance_id = _trigger(shop, flow_id, f"bob-{uuid.uuid4().hex[:8]}")
    instance = eventually_sync(
        lambda: shop.call("InstanceService/GetInstance", {"id": instance_id}),
        until=lambda seen: seen["status"] != "INSTANCE_STATUS_WAITING",
        within=TIMEOUT_WAIT_SECONDS,
        interval=0.5,
        what="the instance leaving WAITING",
    )
    # Reaching the `exit` node is the normal end (SPEC 6.3): COMPLETED, with no exit reason.
    assert instance["status"] == "INSTANCE_STATUS_COMPLETED", f"{instance['status']} ({instance.get('exit_reason')})"
    assert "exit_reason" not in instance
    steps = _steps(shop, instance_id)
    assert ("wait", "timed_out") in steps
    assert steps[-1][0] == "gave_up"
    listed = shop.call("InstanceService/ListExecutionSteps", {"instance_id": instance_id})["steps"]
    assert listed[-1]["output"] == {"reason": "no purchase"}, "the exit node's reason is its step's output"
    assert [step["status"] for step in listed] == ["STEP_STATUS_COMPLETED"] * 3, "one row per visit, none waiting"
    assert [step["node_id"] for step in listed] == ["entry", "wait", "gave_up"]
    assert "bought" not in [node for node, _ in steps]


def test_cancel_exits_a_live_instance_once(shop: Caller) -> None:
    flow_id = _active_flow(shop, "1h")
    instance_id = _trigger(shop, flow_id, f"carol-{uuid.uuid4().hex[:8]}")
    cancelled = shop.call("InstanceService/CancelInstance", {"id": instance_id, "reason": "support request"})
    assert cancelled["status"] == "INSTANCE_STATUS_EXITED"
    assert cancelled["exit_reason"] == "support request"
    assert shop.fails("InstanceService/CancelInstance", {"id": instance_id}) == "FailedPrecondition"


def test_another_tenant_cannot_see_or_touch_the_shops_instances(shop: Caller, intruder: Caller) -> None:
    flow_id = _active_flow(shop, "1h")
    participant = f"dave-{uuid.uuid4().hex[:8]}"
    instance_id = _trigger(shop, flow_id, participant)
    before = shop.call("InstanceService/GetInstance", {"id": instance_id})

    assert intruder.fails("InstanceService/GetInstance", {"id": instance_id}) == "NotFound"
    assert intruder.fails("InstanceService/ListExecutionSteps", {"instance_id": instance_id}) == "NotFound"
    assert intruder.fails("InstanceService/CancelInstance", {"id": instance_id}) == "NotFound"
    assert intruder.fails("TriggerService/TriggerFlow", {"flow_id": flow_id, "participant_id": "eve"}) == "NotFound"
    listed = intruder.call("InstanceService/ListInstances", {"flow_id": flow_id})
    assert listed.get("instances", []) == []
    assert intruder.call("InstanceService/ListInstances", {"participant_id": participant}).get("instances", []) == []
    assert shop.call("InstanceService/GetInstance", {"id": instance_id}) == before
