"""InstanceService on the real API process: reads of instances and steps (set up as rows, as the engine writes
them), filters, pagination, bad input and tenant isolation."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from kalcifer.v1 import instance_pb2, instance_pb2_grpc
from kalcifer_common.db.models import ExecutionStep, Flow, FlowInstance, FlowVersion
from kalcifer_common.structs import struct_to_dict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.processes import Suite
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant, new_tenant

_S = instance_pb2.InstanceStatus
# Recent, whole seconds: the engine of the session's suite prunes finished instances past
# INSTANCE_RETENTION_SECONDS (30 days) in its recovery passes, which once deleted this module's rows (then dated
# 2026-01-01) between its seed and its tests.
BASE_TIME = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


@dataclass(frozen=True)
class Seeded:
    """Tenant A's rows: two flows, instances in every status, steps of the first instance."""

    flow_a: uuid.UUID
    flow_b: uuid.UUID
    instances: list[uuid.UUID]  # newest first
    steps_of: uuid.UUID


STATUSES = ["running", "waiting", "paused", "completed", "failed", "exited", "completed"]


@pytest.fixture(scope="module")
async def seeded(sessions: async_sessionmaker[AsyncSession], tenant_a: Tenant) -> Seeded:
    tenant_id = tenant_a.id
    flow_a, flow_b = uuid.uuid4(), uuid.uuid4()
    ids: list[uuid.UUID] = []
    async with sessions.begin() as session:
        for flow_id in (flow_a, flow_b):
            session.add(Flow(id=flow_id, tenant_id=tenant_id, name="f", status="active", active_version_number=1))
        await session.flush()
        for flow_id in (flow_a, flow_b):
            session.add(FlowVersion(tenant_id=tenant_id, flow_id=flow_id, version_number=1, status="active"))
        for index, status in enumerate(STATUSES):
            instance_id = uuid.uuid4()
            ids.append(instance_id)
            finished = status in ("completed", "failed", "exited")
            session.add(
                FlowInstance(
                    id=instance_id,
                    tenant_id=tenant_id,
                    # Flow A gets the even-numbered instances, flow B the odd ones.
                    flow_id=flow_a if index % 2 == 0 else flow_b,
                    version_number=1,
                    participant_id=f"p-{index % 3}",
                    status=status,
                    exclusive=False,
                    current_nodes=[] if finished else ["wait_1"],
                    context={"tier": "gold", "n": index, "_participant_id": f"p-{index % 3}"},
                    exit_reason="boom" if status == "failed" else None,
                    enter_time=BASE_TIME + timedelta(minutes=index),
                    end_time=BASE_TIME + timedelta(minutes=index, seconds=30) if finished else None,
                )
            )
        await session.flush()
        for node_id, node_type, status, output in [
            ("start", "event_entry", "completed", {"event_type": "signup"}),
            ("check", "condition", "completed", {"branch": "true", "result": True}),
            ("wait_1", "wait_for_event", "waiting", None),
        ]:
            session.add(
                ExecutionStep(
                    tenant_id=tenant_id,
                    instance_id=ids[0],
                    node_id=node_id,
                    node_type=node_type,
                    version_number=1,
                    status=status,
                    input={"config": {"node": node_id}},
                    output=output,
                )
            )
    return Seeded(flow_a=flow_a, flow_b=flow_b, instances=list(reversed(ids)), steps_of=ids[0])


def _list_all(
    stub: instance_pb2_grpc.InstanceServiceStub, tenant: Tenant, **filters: object
) -> list[instance_pb2.FlowInstance]:
    seen: list[instance_pb2.FlowInstance] = []
    token = ""
    for _ in range(50):
        page = stub.ListInstances(
            instance_pb2.ListInstancesRequest(page_size=2, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=tenant.auth,
        )
        assert len(page.instances) <= 2
        seen += page.instances
        token = page.next_page_token
        if not token:
            return seen
    raise AssertionError("pagination did not end")


def test_get_instance_maps_every_field(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    failed_id = seeded.instances[len(STATUSES) - 1 - STATUSES.index("failed")]
    got = instances.GetInstance(instance_pb2.GetInstanceRequest(id=str(failed_id)), metadata=tenant_a.auth)
    assert got.id == str(failed_id)
    assert got.status == _S.INSTANCE_STATUS_FAILED
    assert got.exit_reason == "boom"
    assert got.version_number == 1
    assert got.participant_id == "p-1"
    assert list(got.current_nodes) == []
    assert struct_to_dict(got.context) == {"tier": "gold", "n": 4, "_participant_id": "p-1"}
    assert got.enter_time.ToDatetime(tzinfo=UTC) == BASE_TIME + timedelta(minutes=4)
    assert got.end_time.ToDatetime(tzinfo=UTC) == BASE_TIME + timedelta(minutes=4, seconds=30)

    waiting = instances.GetInstance(
        instance_pb2.GetInstanceRequest(id=str(seeded.instances[-2])), metadata=tenant_a.auth
    )
    assert waiting.status == _S.INSTANCE_STATUS_WAITING
    assert list(waiting.current_nodes) == ["wait_1"]
    assert not waiting.HasField("end_time")
    assert waiting.exit_reason == ""


def test_list_instances_is_newest_first_across_pages(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    listed = _list_all(instances, tenant_a)
    assert [uuid.UUID(i.id) for i in listed] == seeded.instances


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (_S.INSTANCE_STATUS_COMPLETED, 2),
        (_S.INSTANCE_STATUS_WAITING, 1),
        (_S.INSTANCE_STATUS_PAUSED, 1),
        (_S.INSTANCE_STATUS_UNSPECIFIED, len(STATUSES)),
    ],
)
def test_list_instances_filters_by_status(
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant_a: Tenant,
    seeded: Seeded,
    status: instance_pb2.InstanceStatus.ValueType,
    expected: int,
) -> None:
    listed = _list_all(instances, tenant_a, status=status)
    assert len(listed) == expected
    if status != _S.INSTANCE_STATUS_UNSPECIFIED:
        assert {i.status for i in listed} == {status}


def test_list_instances_filters_by_flow_and_participant(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    by_flow = _list_all(instances, tenant_a, flow_id=str(seeded.flow_b))
    assert len(by_flow) == 3
    assert {i.flow_id for i in by_flow} == {str(seeded.flow_b)}

    by_participant = _list_all(instances, tenant_a, participant_id="p-0")
    assert [i.participant_id for i in by_participant] == ["p-0"] * 3

    combined = _list_all(
        instances, tenant_a, flow_id=str(seeded.flow_a), participant_id="p-0", status=_S.INSTANCE_STATUS_COMPLETED
    )
    # Index 6 (flow A, p-0, completed) only; index 0 is running and index 3 is on flow B.
    assert [uuid.UUID(i.id) for i in combined] == [seeded.instances[0]]
    assert _list_all(instances, tenant_a, participant_id="nobody") == []


def test_list_steps_in_execution_order_with_branch_and_pages(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    request = instance_pb2.ListExecutionStepsRequest(instance_id=str(seeded.steps_of), page_size=2)
    first = instances.ListExecutionSteps(request, metadata=tenant_a.auth)
    assert [s.node_id for s in first.steps] == ["start", "check"]
    assert first.next_page_token
    second = instances.ListExecutionSteps(
        instance_pb2.ListExecutionStepsRequest(
            instance_id=str(seeded.steps_of), page_size=2, page_token=first.next_page_token
        ),
        metadata=tenant_a.auth,
    )
    assert [s.node_id for s in second.steps] == ["wait_1"]
    assert second.next_page_token == ""

    start, check = first.steps
    (wait,) = second.steps
    assert start.status == instance_pb2.STEP_STATUS_COMPLETED
    assert start.node_type == "event_entry"
    assert start.instance_id == str(seeded.steps_of)
    assert struct_to_dict(start.input) == {"config": {"node": "start"}}
    assert check.branch == "true"
    assert struct_to_dict(check.output) == {"branch": "true", "result": True}
    assert wait.status == instance_pb2.STEP_STATUS_WAITING
    assert not wait.HasField("output")
    assert not wait.HasField("end_time")

    empty = instances.ListExecutionSteps(
        instance_pb2.ListExecutionStepsRequest(instance_id=str(seeded.instances[0])), metadata=tenant_a.auth
    )
    assert list(empty.steps) == []


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (instance_pb2.ListInstancesRequest(page_size=-1), {"page_size"}),
        (instance_pb2.ListInstancesRequest(flow_id="not-a-uuid"), {"flow_id"}),
        (instance_pb2.ListInstancesRequest(page_token="garbage"), {"page_token"}),
        (instance_pb2.ListInstancesRequest(participant_id=" padded "), {"participant_id"}),
        (instance_pb2.ListInstancesRequest(participant_id="x" * 257), {"participant_id"}),
        (instance_pb2.ListInstancesRequest(status=99), {"status"}),  # type: ignore[arg-type]
        (
            instance_pb2.ListInstancesRequest(flow_id="nope", participant_id="   "),
            {"flow_id", "participant_id"},
        ),
    ],
)
def test_list_instances_bad_input_names_the_field(
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant_a: Tenant,
    request_: instance_pb2.ListInstancesRequest,
    fields: set[str],
) -> None:
    error = rpc_error(lambda: instances.ListInstances(request_, metadata=tenant_a.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == fields


def test_a_page_token_only_fits_its_own_filters(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    page = instances.ListInstances(instance_pb2.ListInstancesRequest(page_size=1), metadata=tenant_a.auth)
    assert page.next_page_token
    other = instance_pb2.ListInstancesRequest(
        page_size=1, page_token=page.next_page_token, status=_S.INSTANCE_STATUS_RUNNING
    )
    error = rpc_error(lambda: instances.ListInstances(other, metadata=tenant_a.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"page_token"}


def test_page_size_is_capped_and_zero_means_default(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, seeded: Seeded
) -> None:
    huge = instances.ListInstances(instance_pb2.ListInstancesRequest(page_size=10**9), metadata=tenant_a.auth)
    default = instances.ListInstances(instance_pb2.ListInstancesRequest(), metadata=tenant_a.auth)
    assert len(huge.instances) == len(default.instances) == len(STATUSES)
    assert huge.next_page_token == default.next_page_token == ""


@pytest.mark.parametrize("bad_id", ["", "nope", "1234"])
def test_malformed_instance_ids_are_field_violations(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, bad_id: str
) -> None:
    calls: dict[str, list[Callable[..., object]]] = {
        "id": [
            functools.partial(instances.GetInstance, instance_pb2.GetInstanceRequest(id=bad_id)),
            functools.partial(instances.CancelInstance, instance_pb2.CancelInstanceRequest(id=bad_id)),
        ],
        "instance_id": [
            functools.partial(instances.ListExecutionSteps, instance_pb2.ListExecutionStepsRequest(instance_id=bad_id)),
        ],
    }
    for field, field_calls in calls.items():
        for call in field_calls:
            error = rpc_error(functools.partial(call, metadata=tenant_a.auth))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(field_violations(error)) == {field}


def test_cancel_bad_input_reports_every_field(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant
) -> None:
    request = instance_pb2.CancelInstanceRequest(id="x", reason="r" * 501, request_id="q" * 201)
    error = rpc_error(lambda: instances.CancelInstance(request, metadata=tenant_a.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"id", "reason", "request_id"}


def test_unknown_instance_is_not_found(instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant) -> None:
    unknown = str(uuid.uuid4())
    for call in (
        functools.partial(instances.GetInstance, instance_pb2.GetInstanceRequest(id=unknown)),
        functools.partial(instances.ListExecutionSteps, instance_pb2.ListExecutionStepsRequest(instance_id=unknown)),
    ):
        error = rpc_error(functools.partial(call, metadata=tenant_a.auth))
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_another_tenant_sees_none_of_these_instances(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_b: Tenant, seeded: Seeded
) -> None:
    for instance_id in (str(seeded.instances[0]), str(seeded.steps_of)):
        for call in (
            functools.partial(instances.GetInstance, instance_pb2.GetInstanceRequest(id=instance_id)),
            functools.partial(
                instances.ListExecutionSteps, instance_pb2.ListExecutionStepsRequest(instance_id=instance_id)
            ),
        ):
            error = rpc_error(functools.partial(call, metadata=tenant_b.auth))
            assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _list_all(instances, tenant_b) == []
    assert _list_all(instances, tenant_b, flow_id=str(seeded.flow_a)) == []
    assert _list_all(instances, tenant_b, participant_id="p-0") == []


async def test_instances_entering_at_the_same_instant_are_paged_once_each(
    instances: instance_pb2_grpc.InstanceServiceStub, suite: Suite, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = new_tenant(suite, "instances-ties")
    flow_id = uuid.uuid4()
    same_instant = BASE_TIME - timedelta(days=1)
    ids = [uuid.uuid4() for _ in range(5)]
    async with sessions.begin() as session:
        session.add(Flow(id=flow_id, tenant_id=tenant.id, name="ties", status="active", active_version_number=1))
        await session.flush()
        for instance_id in ids:
            session.add(
                FlowInstance(
                    id=instance_id,
                    tenant_id=tenant.id,
                    flow_id=flow_id,
                    version_number=1,
                    participant_id=str(instance_id),
                    status="completed",
                    enter_time=same_instant,
                )
            )
    listed = _list_all(instances, tenant, flow_id=str(flow_id))
    # Ties on enter_time are broken by id, newest-first order meaning descending ids.
    assert [uuid.UUID(i.id) for i in listed] == sorted(ids, reverse=True)
