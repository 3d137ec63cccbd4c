"""Issue #4 end to end through the real `grpcurl` binary, as an operator drives it: a flow that waits for a
purchase is created and activated with FlowService, a participant is triggered into it, and another tenant can
neither see, list, cancel nor trigger anything of it."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.grpcurl import GrpcurlResult, grpcurl
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e


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
            {"id": "gave_up", "type": "exit", "config": {}},
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


def test_another_tenant_cannot_see_or_touch_the_shops_instances(shop: Caller, intruder: Caller) -> None:
    flow_id = _active_flow(shop, "1h")
    participant = f"dave-{uuid.uuid4().hex[:8]}"
    instance_id = _trigger(shop, flow_id, participant)
    before = shop.call("InstanceService/GetInstance", {"id": instance_id})
    steps_before = _steps(shop, instance_id)

    assert intruder.fails("InstanceService/GetInstance", {"id": instance_id}) == "NotFound"
    assert intruder.fails("InstanceService/ListExecutionSteps", {"instance_id": instance_id}) == "NotFound"
    assert intruder.fails("InstanceService/CancelInstance", {"id": instance_id}) == "NotFound"
    assert intruder.fails("TriggerService/TriggerFlow", {"flow_id": flow_id, "participant_id": "eve"}) == "NotFound"
    listed = intruder.call("InstanceService/ListInstances", {"flow_id": flow_id})
    assert listed.get("instances", []) == []
    assert intruder.call("InstanceService/ListInstances", {"participant_id": participant}).get("instances", []) == []
    # The same participant id in another tenant is another person: the intruder's event touches nothing here.
    foreign = intruder.call(
        "EventService/IngestEvent", {"participant_id": participant, "event_type": "purchase", "data": {"sku": "x"}}
    )
    assert (foreign.get("resumed", 0), foreign.get("started", 0)) == (0, 0)
    assert shop.call("InstanceService/GetInstance", {"id": instance_id}) == before
    assert _steps(shop, instance_id) == steps_before
