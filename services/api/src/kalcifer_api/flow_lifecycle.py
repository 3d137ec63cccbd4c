"""The flow lifecycle (SPEC 4, 6.8) as steps that run inside the caller's open transaction.

DRAFT -> ACTIVE (activate) <-> PAUSED (pause / resume); ACTIVE or PAUSED -> ARCHIVED (archive, final). A draft is
deleted, not archived (see `kalcifer/v1/flow.proto`). Each step locks the flow row (`SELECT ... FOR UPDATE`) before
it reads the status, so concurrent transitions of one flow serialize and the second one sees the first one's
outcome. Nothing here commits: FlowService and JourneyService call these inside their own transaction, together
with their other writes and their `request_id` record, so a lifecycle move and what depends on it land together.

Instance side effects are written in the same transaction: pausing parks WAITING instances as PAUSED, resuming
releases them to WAITING, archiving exits every live instance (`exit_reason = "flow_archived"`) and cancels its
pending waits. After a resume commits, the caller asks the engine to apply the resumes held meanwhile
(`release_held_resumes`), best effort: the engine's recovery applies them later anyway.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import grpc
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import flow_pb2
from kalcifer_common.db.models import Flow, FlowInstance, FlowVersion, Wait
from kalcifer_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from kalcifer_common.logging import get_logger
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.engine_client import EngineClient
from kalcifer_api.grpc.flows_graph import graph_from_json

_log = get_logger(__name__)

INVALID_TRANSITION = "INVALID_TRANSITION"
NO_DRAFT_VERSION = "NO_DRAFT_VERSION"
FLOW_ARCHIVED_EXIT_REASON = "flow_archived"

# flow_versions.status values: a published version that another one replaced is "superseded" (the wire shows it
# as ARCHIVED; RollbackFlowVersion can make it active again).
VERSION_DRAFT = "draft"
VERSION_ACTIVE = "active"
VERSION_SUPERSEDED = "superseded"


async def lock_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> Flow:
    """The tenant's flow row, locked until the transaction ends; NOT_FOUND when absent or another tenant's."""
    flow = await session.scalar(
        select(Flow)
        .where(Flow.id == flow_id, Flow.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if flow is None:
        raise NotFound("flow", str(flow_id))
    return flow


def _refuse(flow: Flow, action: str, allowed: str) -> FailedPrecondition:
    return FailedPrecondition(
        INVALID_TRANSITION,
        f"cannot {action} flow {flow.id} in status {flow.status.upper()}; only a {allowed} flow can be",
        metadata={"flow_id": str(flow.id), "status": flow.status.upper()},
    )


def _naming_the_node(violation: flow_pb2.GraphViolation) -> str:
    """The description, led by the node's id when it does not name it already (field paths only index nodes)."""
    quoted = json.dumps(violation.node_id)  # how the engine quotes ids in its descriptions
    if violation.node_id and quoted not in violation.description:
        return f"node {quoted}: {violation.description}"
    return violation.description


async def require_valid_graph(engine: EngineClient, tenant_id: uuid.UUID, graph_json: dict[str, object]) -> None:
    """INVALID_ARGUMENT naming every violation the engine finds in `graph_json` (one field violation each)."""
    answer = await engine.stub.ValidateGraph(
        engine_pb2.ValidateGraphRequest(graph=graph_from_json(graph_json), tenant_id=str(tenant_id))
    )
    if not answer.valid:
        raise InvalidArgument(
            [FieldViolation(v.field, _naming_the_node(v)) for v in answer.violations],
            message=f"the graph has {len(answer.violations)} violation(s): "
            + "; ".join(f"{v.field}: {v.description}" for v in answer.violations[:5]),
        )


async def publish_version(session: AsyncSession, flow: Flow, version: FlowVersion) -> None:
    """Make `version` the flow's active version: the current active one becomes superseded, `version` becomes
    active (its first publish time is kept on a rollback) and the flow points at it. The flow row must be locked."""
    await session.execute(
        update(FlowVersion)
        .where(FlowVersion.flow_id == flow.id, FlowVersion.status == VERSION_ACTIVE, FlowVersion.id != version.id)
        .values(status=VERSION_SUPERSEDED)
    )
    await session.execute(
        update(FlowVersion)
        .where(FlowVersion.id == version.id)
        .values(status=VERSION_ACTIVE, publish_time=func.coalesce(FlowVersion.publish_time, func.now()))
    )
    await session.execute(update(Flow).where(Flow.id == flow.id).values(active_version_number=version.version_number))


async def activate_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, engine: EngineClient) -> None:
    """DRAFT -> ACTIVE: publish the newest DRAFT version once the engine finds its graph valid.

    Errors: NOT_FOUND; FAILED_PRECONDITION INVALID_TRANSITION (not DRAFT) or NO_DRAFT_VERSION; INVALID_ARGUMENT
    with the graph's violations.
    """
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status != "draft":
        raise _refuse(flow, "activate", "DRAFT")
    version = await session.scalar(
        select(FlowVersion)
        .where(FlowVersion.flow_id == flow.id, FlowVersion.status == VERSION_DRAFT)
        .order_by(FlowVersion.version_number.desc())
        .limit(1)
    )
    if version is None:
        raise FailedPrecondition(
            NO_DRAFT_VERSION,
            f"flow {flow.id} has no DRAFT version to publish; create one with CreateFlowVersion",
            metadata={"flow_id": str(flow.id)},
        )
    await require_valid_graph(engine, tenant_id, version.graph)
    await publish_version(session, flow, version)
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status="active"))


async def pause_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """ACTIVE -> PAUSED: no new entries; WAITING instances become PAUSED (resumes that arrive are held by the
    engine). Running instances pause at their next wait. Errors: NOT_FOUND, INVALID_TRANSITION (not ACTIVE)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status != "active":
        raise _refuse(flow, "pause", "ACTIVE")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status="paused"))
    await session.execute(
        update(FlowInstance)
        .where(FlowInstance.tenant_id == tenant_id, FlowInstance.flow_id == flow.id, FlowInstance.status == "waiting")
        .values(status="paused")
    )


async def resume_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """PAUSED -> ACTIVE: entries accepted again; PAUSED instances go back to WAITING. After the commit the caller
    calls `release_held_resumes`. Errors: NOT_FOUND, INVALID_TRANSITION (not PAUSED)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status != "paused":
        raise _refuse(flow, "resume", "PAUSED")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status="active"))
    await session.execute(
        update(FlowInstance)
        .where(FlowInstance.tenant_id == tenant_id, FlowInstance.flow_id == flow.id, FlowInstance.status == "paused")
        .values(status="waiting")
    )


async def archive_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """ACTIVE or PAUSED -> ARCHIVED (final): every live instance exits with `flow_archived` and its pending waits
    are cancelled (their timers then fire into nothing). Errors: NOT_FOUND, INVALID_TRANSITION (DRAFT: delete it
    instead; or already ARCHIVED)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status not in ("active", "paused"):
        raise _refuse(flow, "archive", "ACTIVE or PAUSED")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status="archived"))
    now = datetime.now(UTC)
    exited = (
        await session.scalars(
            update(FlowInstance)
            .where(
                FlowInstance.tenant_id == tenant_id,
                FlowInstance.flow_id == flow.id,
                FlowInstance.status.in_(("running", "waiting", "paused")),
            )
            .values(status="exited", exit_reason=FLOW_ARCHIVED_EXIT_REASON, end_time=now, lease_until=None)
            .returning(FlowInstance.id)
        )
    ).all()
    if exited:
        await session.execute(
            update(Wait)
            .where(Wait.tenant_id == tenant_id, Wait.instance_id.in_(exited), Wait.status == "pending")
            .values(status="cancelled", resolved_time=now)
        )


async def release_held_resumes(engine: EngineClient, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """After a resume committed: ask the engine to apply the resumes held while the flow was paused.

    Best effort: an engine that is down or does not implement it yet is logged, not raised; the flow is already
    ACTIVE and the engine's recovery and the scheduler's sweep apply what was held.
    """
    try:
        await engine.stub.ResumeFlowInstances(
            engine_pb2.ResumeFlowInstancesRequest(tenant_id=str(tenant_id), flow_id=str(flow_id))
        )
    except grpc.aio.AioRpcError as error:
        expected = error.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE)
        (_log.warning if expected else _log.error)(
            "could not release held resumes after ResumeFlow",
            tenant_id=str(tenant_id),
            flow_id=str(flow_id),
            code=error.code().name,
            details=error.details(),
        )
