"""The flow lifecycle (SPEC 4, 6.8): the flow's own status moves inside the caller's open transaction; what the
move means for the flow's instances is the engine's to do, after the commit.

DRAFT -> ACTIVE (activate) <-> PAUSED (pause / resume); ACTIVE or PAUSED -> ARCHIVED (archive, final). A draft is
deleted, not archived (see `kalcifer/v1/flow.proto`). Each step locks the flow row (`SELECT ... FOR UPDATE`) before
it reads the status, so concurrent transitions of one flow serialize and the second one sees the first one's
outcome. Nothing here commits: FlowService and JourneyService call these inside their own transaction, together
with their other writes and their `request_id` record.

The engine is the only writer of instances and waits. Once the new status has committed, the caller hands it to
`carry_to_instances`, which asks the engine to pause the flow's WAITING instances, release its PAUSED ones (and
apply the resumes held meanwhile) or exit its live ones (`flow_archived`, cancelling their timers). The engine acts
only on what the flow's committed status still calls for, so the call is idempotent and safe to retry; a call
that never arrives is made good by the engine's own recovery (`reconcile_flow_holds`).
"""

from __future__ import annotations

import json
import uuid

import grpc
import stamina
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import flow_pb2
from kalcifer_common.db.models import Flow, FlowVersion
from kalcifer_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from kalcifer_common.graphs import graph_from_json
from kalcifer_common.logging import get_logger
from kalcifer_common.statuses import FLOW_ARCHIVED_EXIT_REASON, FlowStatus, FlowVersionStatus
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.engine_client import EngineClient

_log = get_logger(__name__)

INVALID_TRANSITION = "INVALID_TRANSITION"
NO_DRAFT_VERSION = "NO_DRAFT_VERSION"
# flow_versions.status values: a published version that another one replaced is "superseded" (the wire shows it
# as ARCHIVED; RollbackFlowVersion can make it active again).
VERSION_DRAFT = FlowVersionStatus.DRAFT
VERSION_ACTIVE = FlowVersionStatus.ACTIVE
VERSION_SUPERSEDED = FlowVersionStatus.SUPERSEDED
# Engine answers worth another attempt: it is restarting, overloaded or slow. Anything else is final.
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


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
    if flow.status != FlowStatus.DRAFT:
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
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status=FlowStatus.ACTIVE))


async def pause_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """ACTIVE -> PAUSED: no new entries; after the commit `carry_to_instances` parks WAITING instances as PAUSED
    (resumes that arrive are held by the engine; running instances pause at their next wait).
    Errors: NOT_FOUND, INVALID_TRANSITION (not ACTIVE)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status != FlowStatus.ACTIVE:
        raise _refuse(flow, "pause", "ACTIVE")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status=FlowStatus.PAUSED))


async def resume_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """PAUSED -> ACTIVE: entries accepted again; after the commit `carry_to_instances` releases PAUSED instances
    and applies what was held. Errors: NOT_FOUND, INVALID_TRANSITION (not PAUSED)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status != FlowStatus.PAUSED:
        raise _refuse(flow, "resume", "PAUSED")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status=FlowStatus.ACTIVE))


async def archive_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """ACTIVE or PAUSED -> ARCHIVED (final): after the commit `carry_to_instances` exits every live instance with
    `flow_archived` and cancels its waits and timers. Errors: NOT_FOUND, INVALID_TRANSITION (DRAFT: delete it
    instead; or already ARCHIVED)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    if flow.status not in (FlowStatus.ACTIVE, FlowStatus.PAUSED):
        raise _refuse(flow, "archive", "ACTIVE or PAUSED")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(status=FlowStatus.ARCHIVED))


def _retryable(error: Exception) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _RETRYABLE


@stamina.retry(on=_retryable, attempts=4, wait_initial=0.1, wait_max=1.0, timeout=30.0)
async def _tell_engine(engine: EngineClient, tenant_id: uuid.UUID, flow_id: uuid.UUID, status: FlowStatus) -> None:
    tenant, flow = str(tenant_id), str(flow_id)
    if status == FlowStatus.PAUSED:
        await engine.stub.PauseFlowInstances(engine_pb2.PauseFlowInstancesRequest(tenant_id=tenant, flow_id=flow))
    elif status == FlowStatus.ACTIVE:
        await engine.stub.ResumeFlowInstances(engine_pb2.ResumeFlowInstancesRequest(tenant_id=tenant, flow_id=flow))
    elif status == FlowStatus.ARCHIVED:
        await engine.stub.ExitFlowInstances(
            engine_pb2.ExitFlowInstancesRequest(tenant_id=tenant, flow_id=flow, reason=FLOW_ARCHIVED_EXIT_REASON)
        )


async def carry_to_instances(engine: EngineClient, tenant_id: uuid.UUID, flow_id: uuid.UUID, status: str) -> None:
    """After a flow's new `status` committed: have the engine bring the flow's instances in line with it.

    Retried while the engine is unavailable or slow (4 attempts, backoff up to 1 s). The flow's status is already
    committed, so a call that still fails is logged, not raised: the engine's recovery applies the same step
    within its `recovery_interval_seconds`.
    """
    try:
        await _tell_engine(engine, tenant_id, flow_id, FlowStatus(status))
    except grpc.aio.AioRpcError as error:
        _log.warning(
            "the engine did not apply a flow's status to its instances; its recovery will",
            tenant_id=str(tenant_id),
            flow_id=str(flow_id),
            status=status,
            code=error.code().name,
            details=error.details(),
        )
