"""AnalyticsService through the real `grpcurl` binary, as the README shows it: JSON in (RFC 3339 day bounds), JSON
out, and a refused range with its field violation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.grpcurl import GrpcurlResult, grpcurl
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
        {
            "id": "split",
            "type": "ab_split",
            "config": {"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]},
        },
        {"id": "wait_a", "type": "wait", "config": {"duration": "1d"}},
        {"id": "wait_b", "type": "wait", "config": {"duration": "2d"}},
    ],
    "edges": [
        {"source": "signup", "target": "split"},
        {"source": "split", "target": "wait_a", "branch": "a"},
        {"source": "split", "target": "wait_b", "branch": "b"},
    ],
}


def _ok(result: GrpcurlResult) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json()


def test_a_flow_summary_and_ab_results_with_grpcurl(suite: Suite) -> None:
    api = suite.address("api")
    key = _ok(
        grpcurl(
            api, "kalcifer.v1.TenantService/CreateTenant", data={"name": "grpcurl-analytics"}, token=suite.admin_token
        )
    )["raw_key"]
    flow = _ok(
        grpcurl(api, "kalcifer.v1.FlowService/CreateFlow", data={"flow": {"name": "ab"}, "graph": GRAPH}, token=key)
    )
    _ok(grpcurl(api, "kalcifer.v1.FlowService/ActivateFlow", data={"id": flow["id"]}, token=key))
    for participant in ("ann", "bob", "cy"):
        trigger = {"flow_id": flow["id"], "participant_id": participant}
        _ok(grpcurl(api, "kalcifer.v1.TriggerService/TriggerFlow", data=trigger, token=key))

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = {"start_time": today.isoformat().replace("+00:00", "Z"), "end_time": (today + timedelta(days=1)).isoformat()}
    summary = _ok(
        grpcurl(api, "kalcifer.v1.AnalyticsService/GetFlowSummary", data={"flow_id": flow["id"], **days}, token=key)
    )
    assert summary == {"entered": "3", "waiting": "3"}
    ab = _ok(
        grpcurl(
            api,
            "kalcifer.v1.AnalyticsService/GetAbResults",
            data={"flow_id": flow["id"], "node_id": "split"},
            token=key,
        )
    )
    assert ab["node_id"] == "split"
    assert [variant["key"] for variant in ab["variants"]] == ["a", "b"]
    assert sum(int(variant.get("participants", "0")) for variant in ab["variants"]) == 3

    refused = grpcurl(
        api,
        "kalcifer.v1.AnalyticsService/GetNodeStats",
        data={"flow_id": flow["id"], "start_time": (today + timedelta(hours=9)).isoformat()},
        token=key,
        flags=["-format-error"],
    )
    assert refused.returncode != 0
    status = json.loads(refused.stderr)
    assert status["code"] == 3  # INVALID_ARGUMENT
    (bad_request,) = status["details"]
    assert [v["field"] for v in bad_request["field_violations"]] == ["start_time"]
