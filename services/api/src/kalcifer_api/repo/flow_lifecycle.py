"""The flow lifecycle (SPEC 4, 6.8) as steps that run inside the caller's open transaction: the flow's own status.

DRAFT -> ACTIVE (activate) <-> PAUSED (pause / resume); ACTIVE or PAUSED -> ARCHIVED (archive, final). A draft is
deleted, not archived (see `kalcifer/v1/flow.proto`). Each step locks the flow row (`SELECT ... FOR UPDATE`) before
it reads the status, so concurrent transitions of one flow serialize and the second one sees the first one's
outcome. Nothing here commits and nothing here calls another service: FlowService and JourneyService validate a
graph with the engine before their transaction (`draft_to_activate` without a lock tells them which graph), and
hand the committed status to `EngineClient.carry_to_instances` after it; the engine alone writes instances.
"""

from __future__ import annotations

import uuid

from kalcifer_common.db.models import Flow, FlowVersion
from kalcifer_common.errors import EtagMismatch, FailedPrecondition, NotFound
from kalcifer_common.statuses import FlowStatus, FlowVersionStatus
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

INVALID_TRANSITION = "INVALID_TRANSITION"
NO_DRAFT_VERSION = "NO_DRAFT_VERSION"
# flow_versions.status values: a published version that another one replaced is "superseded" (the wire shows it
# as ARCHIVED; RollbackFlowVersion can make it active again).
VERSION_DRAFT = FlowVersionStatus.DRAFT
VERSION_ACTIVE = FlowVersionStatus.ACTIVE
VERSION_SUPERSEDED = FlowVersionStatus.SUPERSEDED


async def lock_flow(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, lock: bool = True) -> Flow:
    """The tenant's flow row, locked until the transaction ends (unless `lock=False`: a plain read, for the checks
    made before a transaction); NOT_FOUND when absent or another tenant's."""
    query = select(Flow).where(Flow.id == flow_id, Flow.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    flow = await session.scalar(query.execution_options(populate_existing=True))
    if flow is None:
        raise NotFound("flow", str(flow_id))
    return flow


def _refuse(flow: Flow, action: str, allowed: str) -> FailedPrecondition:
    return FailedPrecondition(
        INVALID_TRANSITION,
        f"cannot {action} flow {flow.id} in status {flow.status.upper()}; only a {allowed} flow can be",
        metadata={"flow_id": str(flow.id), "status": flow.status.upper()},
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


async def draft_to_activate(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, lock: bool = True
) -> tuple[Flow, FlowVersion]:
    """The DRAFT flow and the newest DRAFT version that activating it would publish.

    Errors: NOT_FOUND; FAILED_PRECONDITION INVALID_TRANSITION (not DRAFT) or NO_DRAFT_VERSION.
    """
    flow = await lock_flow(session, tenant_id, flow_id, lock=lock)
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
    return flow, version


async def activate_flow(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, validated_version: int
) -> None:
    """DRAFT -> ACTIVE: publish the newest DRAFT version, which must be `validated_version` (the one whose graph
    the engine found valid before this transaction). ABORTED when a newer draft arrived meanwhile (retry).

    Errors: NOT_FOUND; FAILED_PRECONDITION INVALID_TRANSITION (not DRAFT) or NO_DRAFT_VERSION; ABORTED.
    """
    flow, version = await draft_to_activate(session, tenant_id, flow_id)
    if version.version_number != validated_version:
        raise EtagMismatch("flow", str(flow_id))
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
