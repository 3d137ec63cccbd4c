"""EngineService runtime RPCs through gRPC (in-process server on a free port): statuses, details, races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import flow_pb2, instance_pb2
from kalcifer_common.rpc.clients import internal_channel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import (
    INTERNAL_TOKEN,
    add_version,
    create_flow,
    create_tenant,
    engine_server,
    graph,
    make_runtime,
    store_event,
)

WAITING_GRAPH = graph(
    [("start", "event_entry", {"event_type": "go"}), ("w", "t_pause", {"seconds": 600})], [("start", "w")]
)


@pytest.fixture
async def stub(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[engine_pb2_grpc.EngineServiceAsyncStub]:
    runtime = make_runtime(engine_role_db, database_url)
    async with engine_server(runtime) as address:
        channel = internal_channel(address, token=INTERNAL_TOKEN, timeout_seconds=120)
        typed: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(channel)
        yield typed
        await channel.close(None)
    await runtime.close()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert isinstance(status, status_pb2.Status)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return {v.field for v in bad.field_violations}
    raise AssertionError("no BadRequest")


async def test_twenty_racing_starts_make_one_instance(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING_GRAPH)
    request = engine_pb2.StartInstanceRequest(tenant_id=str(tenant), flow_id=str(flow), participant_id="racer")
    results = await asyncio.gather(*(stub.StartInstance(request) for _ in range(20)), return_exceptions=True)
    started = [r for r in results if isinstance(r, engine_pb2.StartInstanceResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(started) == 1, [(e.code(), e.details()) for e in refused][:3]
    assert len(refused) == 19
    assert {e.code() for e in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert {error_info(e).reason for e in refused} == {"ALREADY_IN_FLOW"}
    async with db_engine.connect() as conn:
        count = await conn.execute(text("SELECT count(*) FROM flow_instances WHERE flow_id = :f"), {"f": flow})
        assert count.scalar_one() == 1


async def test_request_id_replays_the_first_start(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING_GRAPH)
    context = struct_pb2.Struct()
    context.update({"source": "crm"})
    request = engine_pb2.StartInstanceRequest(
        tenant_id=str(tenant), flow_id=str(flow), participant_id="idem", context=context, request_id="r-1"
    )
    first, second = await stub.StartInstance(request), await stub.StartInstance(request)
    assert first.instance_id == second.instance_id


async def test_start_errors_carry_precise_statuses(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    draft = await create_flow(db_engine, tenant, WAITING_GRAPH, status="paused")
    with pytest.raises(grpc.aio.AioRpcError) as not_active:
        await stub.StartInstance(
            engine_pb2.StartInstanceRequest(tenant_id=str(tenant), flow_id=str(draft), participant_id="x")
        )
    assert not_active.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(not_active.value).reason == "FLOW_NOT_ACTIVE"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.StartInstance(
            engine_pb2.StartInstanceRequest(tenant_id=str(tenant), flow_id=str(uuid.uuid4()), participant_id="x")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.StartInstance(engine_pb2.StartInstanceRequest(tenant_id="nope", flow_id="", participant_id=""))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(bad.value) == {"tenant_id", "flow_id", "participant_id"}


async def test_start_instances_answers_each_start_as_start_instance_would(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING_GRAPH)
    paused = await create_flow(db_engine, tenant, WAITING_GRAPH, status="paused")

    def start(flow_id: uuid.UUID | str, participant: str, request_id: str = "") -> engine_pb2.StartInstanceRequest:
        return engine_pb2.StartInstanceRequest(
            tenant_id=str(tenant), flow_id=str(flow_id), participant_id=participant, request_id=request_id
        )

    answer = await stub.StartInstances(
        engine_pb2.StartInstancesRequest(
            starts=[
                start(flow, "a"),
                start(paused, "a"),  # FAILED_PRECONDITION FLOW_NOT_ACTIVE
                start(flow, "b", request_id="r-b"),
                start(uuid.uuid4(), "a"),  # NOT_FOUND
                start("nope", ""),  # INVALID_ARGUMENT on two fields
                start(flow, "a"),  # already in the flow: ALREADY_EXISTS (after or before "a" above, one of them)
            ]
        )
    )

    outcomes = [str(result.WhichOneof("outcome")) for result in answer.results]
    statuses = [status_pb2.Status.FromString(result.error) if result.error else None for result in answer.results]
    codes = [grpc.StatusCode.OK if status is None else _code(status.code) for status in statuses]
    assert codes[1:5] == [
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    # The two starts of "a": one started, the other is ALREADY_EXISTS ALREADY_IN_FLOW.
    assert sorted(outcomes[i] for i in (0, 5)) == ["error", "started"]
    twice = statuses[0] or statuses[5]
    assert twice is not None
    assert _code(twice.code) == grpc.StatusCode.ALREADY_EXISTS
    assert _reason(twice) == "ALREADY_IN_FLOW"
    assert statuses[1] is not None
    assert _reason(statuses[1]) == "FLOW_NOT_ACTIVE"
    # b's start is idempotent by its request id, as through StartInstance.
    again = await stub.StartInstance(start(flow, "b", request_id="r-b"))
    assert again.instance_id == answer.results[2].started.instance_id
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.StartInstances(engine_pb2.StartInstancesRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_route_each_event_answers_each_event_as_route_event_would(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    await create_flow(db_engine, tenant, WAITING_GRAPH)  # event_entry "go": a "go" event starts an instance
    go = await store_event(db_engine, tenant, "ada", "go", {})
    other = await store_event(db_engine, tenant, "bob", "unrelated", {})

    def route(event_id: uuid.UUID | str, participant: str, event_type: str) -> engine_pb2.RouteEventRequest:
        return engine_pb2.RouteEventRequest(
            tenant_id=str(tenant), event_id=str(event_id), participant_id=participant, event_type=event_type
        )

    answer = await stub.RouteEachEvent(
        engine_pb2.RouteEventsRequest(
            events=[
                route(go, "ada", "go"),
                route(uuid.uuid4(), "cy", "go"),  # never stored: NOT_FOUND, for this event alone
                route(other, "bob", "unrelated"),
                route("nope", "", "go"),  # INVALID_ARGUMENT on two fields, for this event alone
            ]
        )
    )

    assert [str(result.WhichOneof("outcome")) for result in answer.results] == ["routed", "error", "routed", "error"]
    assert answer.results[0].routed.started == 1
    assert answer.results[2].routed == engine_pb2.RouteEventResponse()
    not_stored = status_pb2.Status.FromString(answer.results[1].error)
    assert _code(not_stored.code) == grpc.StatusCode.NOT_FOUND
    malformed = status_pb2.Status.FromString(answer.results[3].error)
    assert _code(malformed.code) == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in malformed.details)
    assert {violation.field for violation in bad_request.field_violations} == {"event_id", "participant_id"}
    # Routing is idempotent per event, as through RouteEvent: routed again, it answers the same instance.
    again = await stub.RouteEvent(route(go, "ada", "go"))
    assert again == answer.results[0].routed
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.RouteEachEvent(engine_pb2.RouteEventsRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _code(value: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == value)


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


async def test_resume_cancel_and_batch_through_grpc(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING_GRAPH)
    started = await stub.StartInstance(
        engine_pb2.StartInstanceRequest(tenant_id=str(tenant), flow_id=str(flow), participant_id="r")
    )
    async with db_engine.connect() as conn:
        wait_id = (
            await conn.execute(text("SELECT id FROM waits WHERE instance_id = :i"), {"i": started.instance_id})
        ).scalar_one()
    not_due = await stub.ResumeInstance(
        engine_pb2.ResumeInstanceRequest(instance_id=started.instance_id, wait_id=str(wait_id), trigger="timer")
    )
    assert (not_due.applied, not_due.reason) == (False, "not_due")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ResumeInstances(
            engine_pb2.ResumeInstancesRequest(
                resumes=[engine_pb2.ResumeInstanceRequest(instance_id="x", wait_id=str(wait_id), trigger="poke")]
            )
        )
    assert violations(bad.value) == {"resumes[0].instance_id", "resumes[0].trigger"}
    with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
        await stub.CancelInstance(
            engine_pb2.CancelInstanceRequest(tenant_id=str(uuid.uuid4()), instance_id=started.instance_id)
        )
    assert other_tenant.value.code() == grpc.StatusCode.NOT_FOUND
    cancelled = await stub.CancelInstance(
        engine_pb2.CancelInstanceRequest(tenant_id=str(tenant), instance_id=started.instance_id)
    )
    assert cancelled.instance.status == instance_pb2.INSTANCE_STATUS_EXITED
    assert cancelled.instance.exit_reason == "cancelled"
    assert cancelled.instance.HasField("end_time")
    with pytest.raises(grpc.aio.AioRpcError) as finished:
        await stub.CancelInstance(
            engine_pb2.CancelInstanceRequest(tenant_id=str(tenant), instance_id=started.instance_id)
        )
    assert error_info(finished.value).reason == "INSTANCE_FINISHED"
    stale = await stub.ResumeInstances(
        engine_pb2.ResumeInstancesRequest(
            resumes=[
                engine_pb2.ResumeInstanceRequest(instance_id=started.instance_id, wait_id=str(wait_id), trigger="timer")
            ]
        )
    )
    assert [(r.applied, r.reason) for r in stale.results] == [(False, "instance_finished")]
    with pytest.raises(grpc.aio.AioRpcError) as unspecified:
        await stub.MigrateInstances(
            engine_pb2.MigrateInstancesRequest(tenant_id=str(tenant), flow_id=str(flow), to_version_number=2)
        )
    assert violations(unspecified.value) == {"strategy"}
    with pytest.raises(grpc.aio.AioRpcError) as same:
        await stub.MigrateInstances(
            engine_pb2.MigrateInstancesRequest(
                tenant_id=str(tenant),
                flow_id=str(flow),
                to_version_number=1,
                from_version_number=1,
                strategy=flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL,
            )
        )
    assert error_info(same.value).reason == "SAME_VERSION"


async def test_migrate_instances_with_a_request_id_replays_its_counts(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING_GRAPH)
    await stub.StartInstance(
        engine_pb2.StartInstanceRequest(tenant_id=str(tenant), flow_id=str(flow), participant_id="mover")
    )
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flow_versions SET status = 'superseded' WHERE flow_id = :f"), {"f": flow})
        await add_version(conn, tenant, flow, 2, WAITING_GRAPH, status="active")
        await conn.execute(text("UPDATE flows SET active_version_number = 2 WHERE id = :f"), {"f": flow})

    def migrate(request_id: str) -> engine_pb2.MigrateInstancesRequest:
        return engine_pb2.MigrateInstancesRequest(
            tenant_id=str(tenant),
            flow_id=str(flow),
            to_version_number=2,
            strategy=flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL,
            request_id=request_id,
        )

    first = await stub.MigrateInstances(migrate("move-once"))
    assert first.migrated == 1
    assert await stub.MigrateInstances(migrate("move-once")) == first, "a retry replays the first counts"
    assert (await stub.MigrateInstances(migrate("another"))).migrated == 0, "a new key migrates what is left"
