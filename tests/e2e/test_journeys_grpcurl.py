"""A marketer's path through the real `grpcurl` binary: a flow with a valid graph, a segment and a customer, a
journey around the flow (bad settings refused with the field named), launched, paused and archived, the flow
following each step."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.marketing import VALID_GRAPH
from tests.support.grpcurl import grpcurl
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e


def _call(suite: Suite, method: str, data: Any, token: str) -> Any:
    result = grpcurl(suite.address("api"), method, data=data, token=token)
    assert result.returncode == 0, f"{method}: {result.stderr}"
    return result.json()


def test_a_journey_is_launched_and_drives_its_flow_through_grpcurl(suite: Suite) -> None:
    tenant = _call(suite, "kalcifer.v1.TenantService/CreateTenant", {"name": "grpcurl-journeys"}, suite.admin_token)
    key = tenant["raw_key"]

    template = {"id": "welcome", "channel": "email", "subject": "Welcome", "body": "Hello"}
    _call(suite, "kalcifer.v1.TemplateService/CreateTemplate", {"template": template}, key)
    flow = _call(
        suite,
        "kalcifer.v1.FlowService/CreateFlow",
        {"flow": {"name": "welcome flow"}, "graph": VALID_GRAPH},
        key,
    )
    assert flow["status"] == "FLOW_STATUS_DRAFT"

    segment = _call(
        suite,
        "kalcifer.v1.SegmentService/CreateSegment",
        {
            "segment": {
                "name": "gold members",
                "match": "SEGMENT_MATCH_ALL",
                "rules": [{"field": "attributes.tier", "operator": "eq", "value": "gold"}],
            }
        },
        key,
    )
    customer = _call(
        suite,
        "kalcifer.v1.CustomerService/UpsertCustomer",
        {"customer": {"external_id": "ann", "attributes": {"tier": "gold"}, "timezone": "Europe/Paris"}},
        key,
    )
    assert customer["attributes"] == {"tier": "gold"}

    journey = {
        "name": "Welcome",
        "flow_id": flow["id"],
        "audience_segment_id": segment["id"],
        "entry_schedule": {"cron": "0 9 * * MON", "timezone": "Europe/Paris"},
        "goals": [{"name": "first_order", "event_type": "order.placed"}],
        "exit_criteria": [{"event_type": "unsubscribed"}],
        "frequency_cap": {"max_messages": 0, "time_window": "1d"},
        "quiet_hours": {"start": "22:00", "end": "08:00"},
        "re_entry": "RE_ENTRY_POLICY_NEVER",
    }
    refused = grpcurl(
        suite.address("api"), "kalcifer.v1.JourneyService/CreateJourney", data={"journey": journey}, token=key
    )
    assert refused.returncode != 0
    assert "InvalidArgument" in refused.stderr
    assert "frequency_cap.max_messages" in refused.stderr

    journey["frequency_cap"] = {"max_messages": 2, "time_window": "1d", "channel": "email"}
    created = _call(suite, "kalcifer.v1.JourneyService/CreateJourney", {"journey": journey}, key)
    assert created["status"] == "JOURNEY_STATUS_DRAFT"
    assert created["frequency_cap"]["max_messages"] == 2

    launched = _call(suite, "kalcifer.v1.JourneyService/LaunchJourney", {"id": created["id"]}, key)
    assert launched["status"] == "JOURNEY_STATUS_ACTIVE"
    active_flow = _call(suite, "kalcifer.v1.FlowService/GetFlow", {"id": flow["id"]}, key)
    assert active_flow["status"] == "FLOW_STATUS_ACTIVE"
    assert active_flow["active_version_number"] == 1

    paused = _call(suite, "kalcifer.v1.JourneyService/PauseJourney", {"id": created["id"]}, key)
    assert paused["status"] == "JOURNEY_STATUS_PAUSED"
    assert _call(suite, "kalcifer.v1.FlowService/GetFlow", {"id": flow["id"]}, key)["status"] == "FLOW_STATUS_PAUSED"

    again = grpcurl(
        suite.address("api"), "kalcifer.v1.JourneyService/LaunchJourney", data={"id": created["id"]}, token=key
    )
    assert again.returncode != 0
    assert "FailedPrecondition" in again.stderr

    archived = _call(suite, "kalcifer.v1.JourneyService/ArchiveJourney", {"id": created["id"]}, key)
    assert archived["status"] == "JOURNEY_STATUS_ARCHIVED"
    assert _call(suite, "kalcifer.v1.FlowService/GetFlow", {"id": flow["id"]}, key)["status"] == "FLOW_STATUS_ARCHIVED"

    listed = _call(suite, "kalcifer.v1.JourneyService/ListJourneys", {"status": "JOURNEY_STATUS_ARCHIVED"}, key)
    assert [j["id"] for j in listed["journeys"]] == [created["id"]]
