"""InstanceService.CancelInstance through the API and the real engine: a live instance exits with the reason and
its waits are cancelled; a finished one is INSTANCE_FINISHED; a request_id replays the first answer; another
tenant's instance is NOT_FOUND and stays untouched."""

from __future__ import annotations

import functools
import uuid

import grpc
from kalcifer.v1 import instance_pb2, instance_pb2_grpc
from kalcifer_common.db.models import Flow, FlowInstance, FlowVersion, Wait
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.rpc import reason_of, rpc_error
from tests.support.tenants import Tenant


async def _waiting_instance(sessions: async_sessionmaker[AsyncSession], tenant: Tenant) -> uuid.UUID:
    """A WAITING instance with a pending event wait, as the engine leaves one."""
    flow_id, instance_id = uuid.uuid4(), uuid.uuid4()
    async with sessions.begin() as session:
        session.add(Flow(id=flow_id, tenant_id=tenant.id, name="f", status="active", active_version_number=1))
        await session.flush()
        session.add(FlowVersion(tenant_id=tenant.id, flow_id=flow_id, version_number=1, status="active"))
        session.add(
            FlowInstance(
                id=instance_id,
                tenant_id=tenant.id,
                flow_id=flow_id,
                version_number=1,
                participant_id="pat",
                status="waiting",
                current_nodes=["wait"],
            )
        )
        await session.flush()
        session.add(
            Wait(
                tenant_id=tenant.id,
                instance_id=instance_id,
                node_id="wait",
                kind="event",
                event_type="purchase",
                participant_id="pat",
            )
        )
    return instance_id


async def _wait_statuses(sessions: async_sessionmaker[AsyncSession], instance_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(Wait.status).where(Wait.instance_id == instance_id))).all())


async def test_cancel_exits_a_live_instance_with_the_reason_and_cancels_its_waits(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    instance_id = await _waiting_instance(sessions, tenant_a)
    cancelled = instances.CancelInstance(
        instance_pb2.CancelInstanceRequest(id=str(instance_id), reason="customer asked"), metadata=tenant_a.auth
    )
    assert cancelled.id == str(instance_id)
    assert cancelled.status == instance_pb2.INSTANCE_STATUS_EXITED
    assert cancelled.exit_reason == "customer asked"
    assert cancelled.HasField("end_time")
    assert list(cancelled.current_nodes) == []
    assert await _wait_statuses(sessions, instance_id) == ["cancelled"]
    read = instances.GetInstance(instance_pb2.GetInstanceRequest(id=str(instance_id)), metadata=tenant_a.auth)
    assert (read.status, read.exit_reason) == (instance_pb2.INSTANCE_STATUS_EXITED, "customer asked")

    again = rpc_error(
        lambda: instances.CancelInstance(
            instance_pb2.CancelInstanceRequest(id=str(instance_id)), metadata=tenant_a.auth
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(again) == "INSTANCE_FINISHED"


async def test_cancel_without_a_reason_records_cancelled(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    instance_id = await _waiting_instance(sessions, tenant_a)
    cancelled = instances.CancelInstance(
        instance_pb2.CancelInstanceRequest(id=str(instance_id)), metadata=tenant_a.auth
    )
    assert cancelled.exit_reason == "cancelled"


async def test_a_cancel_retried_with_its_request_id_replays_the_first_answer(
    instances: instance_pb2_grpc.InstanceServiceStub, tenant_a: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    instance_id = await _waiting_instance(sessions, tenant_a)
    request = instance_pb2.CancelInstanceRequest(id=str(instance_id), reason="dup", request_id="cancel-once")
    first = instances.CancelInstance(request, metadata=tenant_a.auth)
    assert instances.CancelInstance(request, metadata=tenant_a.auth) == first
    # The same request_id for another instance is a different request.
    other = await _waiting_instance(sessions, tenant_a)
    reused = instance_pb2.CancelInstanceRequest(id=str(other), reason="dup", request_id="cancel-once")
    error = rpc_error(lambda: instances.CancelInstance(reused, metadata=tenant_a.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_tenant_cannot_cancel_the_instance(
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant_a: Tenant,
    tenant_b: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    instance_id = await _waiting_instance(sessions, tenant_a)
    for request in (
        instance_pb2.CancelInstanceRequest(id=str(instance_id)),
        instance_pb2.CancelInstanceRequest(id=str(instance_id), request_id="foreign"),
    ):
        error = rpc_error(functools.partial(instances.CancelInstance, request, metadata=tenant_b.auth))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    still = instances.GetInstance(instance_pb2.GetInstanceRequest(id=str(instance_id)), metadata=tenant_a.auth)
    assert still.status == instance_pb2.INSTANCE_STATUS_WAITING
    assert await _wait_statuses(sessions, instance_id) == ["pending"]
    unknown = rpc_error(
        lambda: instances.CancelInstance(
            instance_pb2.CancelInstanceRequest(id=str(uuid.uuid4())), metadata=tenant_a.auth
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
