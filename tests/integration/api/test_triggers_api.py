"""TriggerService on the real API process: bad input, flows that cannot be started, other tenants' flows."""

from __future__ import annotations

import uuid

import grpc
import pytest
from kalcifer.v1 import trigger_pb2, trigger_pb2_grpc
from kalcifer_common.structs import dict_to_struct

from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant

FLOW_ID = str(uuid.uuid4())
BIG = dict_to_struct({"blob": "x" * (64 * 1024 + 1)})


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(trigger_pb2.TriggerFlowRequest(participant_id="p"), {"flow_id"}, id="no-flow"),
        pytest.param(trigger_pb2.TriggerFlowRequest(flow_id="x", participant_id="p"), {"flow_id"}, id="bad-flow"),
        pytest.param(trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID), {"participant_id"}, id="no-participant"),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID, participant_id=" p"), {"participant_id"}, id="padded"
        ),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID, participant_id="p" * 257),
            {"participant_id"},
            id="long-participant",
        ),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID, participant_id="p", context=BIG), {"context"}, id="big"
        ),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID, participant_id="p", entry_node_id="n" * 201),
            {"entry_node_id"},
            id="long-entry",
        ),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id=FLOW_ID, participant_id="p", request_id="r" * 201),
            {"request_id"},
            id="long-request-id",
        ),
        pytest.param(
            trigger_pb2.TriggerFlowRequest(flow_id="x", context=BIG), {"flow_id", "participant_id", "context"}, id="all"
        ),
    ],
)
def test_bad_trigger_flow_is_a_field_violation(
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    tenant: Tenant,
    request_: trigger_pb2.TriggerFlowRequest,
    fields: set[str],
) -> None:
    error = rpc_error(lambda: triggers.TriggerFlow(request_, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == fields


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(trigger_pb2.TriggerWebhookRequest(participant_id="p"), {"webhook_path"}, id="no-path"),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="/orders/paid", participant_id="p"),
            {"webhook_path"},
            id="leading-slash",
        ),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="Orders", participant_id="p"), {"webhook_path"}, id="upper"
        ),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="a//b", participant_id="p"), {"webhook_path"}, id="empty-seg"
        ),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="a" * 201, participant_id="p"), {"webhook_path"}, id="long"
        ),
        pytest.param(trigger_pb2.TriggerWebhookRequest(webhook_path="signup"), {"participant_id"}, id="no-participant"),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="signup", participant_id="p", payload=BIG),
            {"payload"},
            id="big-payload",
        ),
        pytest.param(
            trigger_pb2.TriggerWebhookRequest(webhook_path="", participant_id="", request_id="r" * 201),
            {"webhook_path", "participant_id", "request_id"},
            id="all",
        ),
    ],
)
def test_bad_trigger_webhook_is_a_field_violation(
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    tenant: Tenant,
    request_: trigger_pb2.TriggerWebhookRequest,
    fields: set[str],
) -> None:
    error = rpc_error(lambda: triggers.TriggerWebhook(request_, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == fields


def test_a_webhook_no_flow_listens_on_starts_nothing(
    triggers: trigger_pb2_grpc.TriggerServiceStub, tenant: Tenant
) -> None:
    response = triggers.TriggerWebhook(
        trigger_pb2.TriggerWebhookRequest(webhook_path="nobody/listens", participant_id="p"), metadata=tenant.auth
    )
    assert list(response.instance_ids) == []
