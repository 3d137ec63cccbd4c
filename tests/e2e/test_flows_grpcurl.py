"""A flow's whole life through the real `grpcurl` binary, as an operator drives it: JSON in, JSON out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.grpcurl import GrpcurlResult, grpcurl
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "wait_a_day", "type": "wait", "config": {"duration": "1d"}},
        {"id": "welcome", "type": "send_email", "config": {"template_id": "welcome"}},
    ],
    "edges": [
        {"source": "signup", "target": "wait_a_day"},
        {"source": "wait_a_day", "target": "welcome"},
    ],
}

BROKEN: dict[str, Any] = {
    "nodes": [
        {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "wait_a_bit", "type": "wait", "config": {"duration": "30"}},
        {"id": "orphan", "type": "add_tag", "config": {"tag": "x"}},
    ],
    "edges": [{"source": "signup", "target": "wait_a_bit"}],
}


def _tenant_key(suite: Suite) -> str:
    created = grpcurl(
        suite.address("api"),
        "kalcifer.v1.TenantService/CreateTenant",
        data={"name": "grpcurl-flows"},
        token=suite.admin_token,
    )
    assert created.returncode == 0, created.stderr
    key: str = created.json()["raw_key"]
    return key


def _call(suite: Suite, key: str, method: str, data: dict[str, Any]) -> GrpcurlResult:
    return grpcurl(suite.address("api"), f"kalcifer.v1.FlowService/{method}", data=data, token=key)


def _ok(result: GrpcurlResult) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json()


def test_create_validate_activate_pause_resume_archive_with_grpcurl(suite: Suite) -> None:
    key = _tenant_key(suite)

    broken = grpcurl(
        suite.address("api"),
        "kalcifer.v1.FlowService/CreateFlow",
        data={"flow": {"name": "broken"}, "graph": BROKEN},
        token=key,
        flags=["-format-error"],
    )
    assert broken.returncode != 0
    status = json.loads(broken.stderr)
    assert status["code"] == 3  # INVALID_ARGUMENT
    (bad_request,) = status["details"]
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    violations = {v["field"]: v["description"] for v in bad_request["field_violations"]}
    assert set(violations) == {"nodes[1].config.duration", "nodes[2]"}
    assert "wait_a_bit" in violations["nodes[1].config.duration"]
    assert "orphan" in violations["nodes[2]"]
    assert _ok(_call(suite, key, "ListFlows", {})) == {}, "nothing was stored"

    checked = _ok(_call(suite, key, "ValidateFlowGraph", {"graph": BROKEN}))
    assert checked.get("valid", False) is False
    by_node = {v.get("node_id"): v["reason"] for v in checked["violations"]}
    assert by_node["wait_a_bit"] == "INVALID_CONFIG"
    assert by_node["orphan"] == "UNREACHABLE_NODE"

    unsent = _ok(_call(suite, key, "ValidateFlowGraph", {"graph": GRAPH}))
    assert [(v["field"], v["reason"]) for v in unsent["violations"]] == [
        ("nodes[2].config.template_id", "UNKNOWN_TEMPLATE")
    ], "a send_email node names a template the tenant must have"
    template = {"id": "welcome", "channel": "email", "subject": "Welcome", "body": "Hello {{ customer.email }}"}
    _ok(
        grpcurl(
            suite.address("api"), "kalcifer.v1.TemplateService/CreateTemplate", data={"template": template}, token=key
        )
    )

    flow = _ok(_call(suite, key, "CreateFlow", {"flow": {"name": "welcome series"}, "graph": GRAPH}))
    assert (flow["status"], flow["latest_version_number"]) == ("FLOW_STATUS_DRAFT", 1)
    stored = _ok(_call(suite, key, "GetFlowVersion", {"flowId": flow["id"], "versionNumber": 1}))
    assert stored["graph"]["nodes"][1]["config"] == {"duration": "1d"}

    steps = [
        ("ActivateFlow", "FLOW_STATUS_ACTIVE"),
        ("PauseFlow", "FLOW_STATUS_PAUSED"),
        ("ResumeFlow", "FLOW_STATUS_ACTIVE"),
        ("ArchiveFlow", "FLOW_STATUS_ARCHIVED"),
    ]
    for method, status in steps:
        moved = _ok(_call(suite, key, method, {"id": flow["id"]}))
        assert moved["status"] == status, method
        assert moved["active_version_number"] == 1

    again = _call(suite, key, "ArchiveFlow", {"id": flow["id"]})
    assert "FailedPrecondition" in again.stderr
    assert "INVALID_TRANSITION" in again.stderr
    listed = _ok(_call(suite, key, "ListFlows", {"status": "FLOW_STATUS_ARCHIVED"}))
    assert [f["id"] for f in listed["flows"]] == [flow["id"]]
    assert listed["flows"][0]["name"] == "welcome series"
