"""Flows and flow versions in PostgreSQL, always scoped to the calling tenant.

Reads open their own session. Writes run through `FlowRepository.write`: one transaction, with `request_id`
replay, handed to the servicer's work as a `FlowTransaction` (the steps below and `repo.flow_lifecycle` on that
transaction's session), so the servicer composes steps without ever seeing SQL. Every step that changes a flow
locks its row first (`lock_flow`), so two writers of one flow serialize. No step calls the engine: a graph is
validated before the transaction (`write(..., prepare=...)`, with the unlocked reads `graph_to_activate` and
`graph_to_publish`), and each step checks again under the lock that what was validated is what it stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import Flow, FlowInstance, FlowMigration, FlowVersion, Journey
from kalcifer_common.errors import FailedPrecondition, NotFound
from kalcifer_common.pagination import PageCursor
from kalcifer_common.statuses import LIVE_INSTANCE_STATUSES, FlowStatus, FlowVersionStatus, InstanceStatus
from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.flows import (
    FLOW_IN_USE,
    SAME_VERSION,
    VERSION_NOT_PUBLISHABLE,
    FlowRecord,
    FlowVersionRecord,
    VersionCount,
    check_etag,
    require_draft,
    require_published_flow,
)
from kalcifer_api.repo import flow_lifecycle
from kalcifer_api.repo.flow_lifecycle import INVALID_TRANSITION, lock_flow
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Result = TypeVar("_Result")
_Response = TypeVar("_Response", bound=Message)

LIVE_STATUSES = LIVE_INSTANCE_STATUSES


def _latest_version() -> Any:
    return (
        select(func.coalesce(func.max(FlowVersion.version_number), 0))
        .where(FlowVersion.flow_id == Flow.id)
        .correlate(Flow)
        .scalar_subquery()
    )


def _flow_record(row: Flow, latest: int) -> FlowRecord:
    return FlowRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        status=row.status,
        active_version_number=row.active_version_number or 0,
        latest_version_number=latest,
        re_entry=row.re_entry,
        revision=row.revision,
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _version_record(row: FlowVersion) -> FlowVersionRecord:
    return FlowVersionRecord(
        flow_id=row.flow_id,
        version_number=row.version_number,
        status=row.status,
        graph=row.graph,
        changelog=row.changelog,
        create_time=row.create_time,
        publish_time=row.publish_time,
    )


def _position(cursor: PageCursor) -> Any:
    return tuple_(*cursor.time_and_id())


async def read_flow_in(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> FlowRecord:
    """The flow as it stands in this transaction (after its writes); NOT_FOUND when absent or foreign."""
    found = (
        await session.execute(
            select(Flow, _latest_version())
            .where(Flow.id == flow_id, Flow.tenant_id == tenant_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    if found is None:
        raise NotFound("flow", str(flow_id))
    return _flow_record(found[0], found[1])


async def create_flow_in(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    name: str,
    description: str,
    re_entry: str,
    graph: dict[str, Any] | None,
) -> FlowRecord:
    """A DRAFT flow; with `graph` (already validated) also its DRAFT version 1."""
    flow = Flow(id=uuid.uuid4(), tenant_id=tenant_id, name=name, description=description, re_entry=re_entry)
    session.add(flow)
    await session.flush()
    if graph is not None:
        session.add(FlowVersion(tenant_id=tenant_id, flow_id=flow.id, version_number=1, graph=graph))
        await session.flush()
    return await read_flow_in(session, tenant_id, flow.id)


async def update_flow_in(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, etag: str, values: dict[str, str]
) -> FlowRecord:
    """Change a DRAFT flow's fields. ABORTED on a stale etag, FLOW_NOT_DRAFT otherwise."""
    flow = await lock_flow(session, tenant_id, flow_id)
    check_etag(etag, flow.revision, flow.id)
    require_draft(flow.status, flow.id, "update")
    await session.execute(update(Flow).where(Flow.id == flow.id).values(**values))
    return await read_flow_in(session, tenant_id, flow_id)


async def delete_flow_in(session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, etag: str) -> None:
    """Delete a DRAFT flow and its versions. A journey built on it must be deleted first (FLOW_IN_USE)."""
    flow = await lock_flow(session, tenant_id, flow_id)
    check_etag(etag, flow.revision, flow.id)
    require_draft(flow.status, flow.id, "delete")
    journey = await session.scalar(
        select(Journey.id).where(Journey.tenant_id == tenant_id, Journey.flow_id == flow.id).limit(1)
    )
    if journey is not None:
        raise FailedPrecondition(
            FLOW_IN_USE,
            f"flow {flow.id} is used by journey {journey}; delete the journey first",
            metadata={"flow_id": str(flow.id), "journey_id": str(journey)},
        )
    await session.execute(delete(Flow).where(Flow.id == flow.id))


async def create_version_in(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    graph: dict[str, Any],
    changelog: str,
) -> FlowVersionRecord:
    """DRAFT version N+1 with `graph` (validated before the transaction); refused for an ARCHIVED flow."""
    flow = await flow_taking_versions(session, tenant_id, flow_id)
    latest = await session.scalar(
        select(func.coalesce(func.max(FlowVersion.version_number), 0)).where(FlowVersion.flow_id == flow.id)
    )
    row = FlowVersion(
        tenant_id=tenant_id, flow_id=flow.id, version_number=int(latest or 0) + 1, graph=graph, changelog=changelog
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    # The flow's latest_version_number changed: bump its revision so cached etags see it.
    await session.execute(update(Flow).where(Flow.id == flow.id).values(update_time=func.now()))
    return _version_record(row)


async def flow_taking_versions(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, lock: bool = True
) -> Flow:
    """The flow, when it may take a new version: NOT_FOUND, or INVALID_TRANSITION when it is ARCHIVED."""
    flow = await lock_flow(session, tenant_id, flow_id, lock=lock)
    if flow.status == FlowStatus.ARCHIVED:
        raise FailedPrecondition(
            INVALID_TRANSITION,
            f"flow {flow.id} is ARCHIVED; it takes no new versions",
            metadata={"flow_id": str(flow.id), "status": "ARCHIVED"},
        )
    return flow


async def version_in(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, version_number: int
) -> FlowVersion:
    """One version of the tenant's flow; NOT_FOUND when it does not exist."""
    row = await session.scalar(
        select(FlowVersion).where(
            FlowVersion.tenant_id == tenant_id,
            FlowVersion.flow_id == flow_id,
            FlowVersion.version_number == version_number,
        )
    )
    if row is None:
        raise NotFound("flow version", f"{flow_id}/versions/{version_number}")
    return row


async def live_instances_elsewhere_in(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, version_number: int
) -> int:
    """Live instances of the flow that are not on `version_number`."""
    count = await session.scalar(
        select(func.count())
        .select_from(FlowInstance)
        .where(
            FlowInstance.tenant_id == tenant_id,
            FlowInstance.flow_id == flow_id,
            FlowInstance.status.in_(LIVE_STATUSES),
            FlowInstance.version_number != version_number,
        )
    )
    return int(count or 0)


async def publishable_version(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    version_number: int,
    *,
    rollback: bool,
    lock: bool = True,
) -> tuple[Flow, FlowVersion]:
    """The flow and the version that may become its active one: a DRAFT version (MigrateFlowVersion) or a formerly
    active one (rollback).

    FLOW_NOT_ACTIVE unless the flow is ACTIVE or PAUSED; NOT_FOUND for an unknown version; SAME_VERSION when it is
    already active; VERSION_NOT_PUBLISHABLE when it is not a draft (or, for a rollback, was never published).
    """
    flow = await lock_flow(session, tenant_id, flow_id, lock=lock)
    require_published_flow(flow.status, flow.id)
    version = await version_in(session, tenant_id, flow_id, version_number)
    if flow.active_version_number == version_number:
        raise FailedPrecondition(
            SAME_VERSION,
            f"version {version_number} is already the active version of flow {flow_id}",
            metadata={"flow_id": str(flow_id), "version_number": str(version_number)},
        )
    is_draft = version.status == FlowVersionStatus.DRAFT
    publishable = not is_draft if rollback else is_draft
    if not publishable:
        what = "was never published; publish it with MigrateFlowVersion" if rollback else "is not a DRAFT"
        raise FailedPrecondition(
            VERSION_NOT_PUBLISHABLE,
            f"version {version_number} of flow {flow_id} {what}",
            metadata={
                "flow_id": str(flow_id),
                "version_number": str(version_number),
                "status": version.status.upper(),
            },
        )
    return flow, version


async def publish_in(
    session: AsyncSession, tenant_id: uuid.UUID, flow_id: uuid.UUID, version_number: int, *, rollback: bool
) -> FlowRecord:
    """Make a version the active one (see `publishable_version`). Its graph was validated before the transaction
    (a tenant's webhook type it uses may have been deleted since it was stored); versions never change, so the
    graph validated is the graph published."""
    flow, version = await publishable_version(session, tenant_id, flow_id, version_number, rollback=rollback)
    await flow_lifecycle.publish_version(session, flow, version)
    return await read_flow_in(session, tenant_id, flow_id)


async def one_snapshot(session: AsyncSession) -> None:
    """Make the session's reads see one snapshot (REPEATABLE READ): the unlocked checks made before a write read
    the flow and its versions as they were at one moment, not a flow still DRAFT beside a version another request
    just published. Call it before the session's first statement."""
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


class FlowTransaction:
    """The steps of one write transaction on the calling tenant's flows; each returns the domain result."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self._session = session
        self.tenant_id = tenant_id

    async def create_flow(
        self, *, name: str, description: str, re_entry: str, graph: dict[str, Any] | None
    ) -> FlowRecord:
        """A DRAFT flow; a given graph (validated before the transaction) becomes DRAFT version 1."""
        return await create_flow_in(
            self._session, self.tenant_id, name=name, description=description, re_entry=re_entry, graph=graph
        )

    async def update_flow(self, flow_id: uuid.UUID, etag: str, values: dict[str, str]) -> FlowRecord:
        """See `update_flow_in`."""
        return await update_flow_in(self._session, self.tenant_id, flow_id, etag, values)

    async def delete_flow(self, flow_id: uuid.UUID, etag: str) -> None:
        """See `delete_flow_in`."""
        await delete_flow_in(self._session, self.tenant_id, flow_id, etag)

    async def create_version(self, flow_id: uuid.UUID, *, graph: dict[str, Any], changelog: str) -> FlowVersionRecord:
        """See `create_version_in`."""
        return await create_version_in(self._session, self.tenant_id, flow_id, graph=graph, changelog=changelog)

    async def activate(self, flow_id: uuid.UUID, *, validated_version: int) -> FlowRecord:
        """DRAFT -> ACTIVE (`flow_lifecycle.activate_flow`)."""
        await flow_lifecycle.activate_flow(self._session, self.tenant_id, flow_id, validated_version=validated_version)
        return await read_flow_in(self._session, self.tenant_id, flow_id)

    async def pause(self, flow_id: uuid.UUID) -> FlowRecord:
        """ACTIVE -> PAUSED (`flow_lifecycle.pause_flow`)."""
        await flow_lifecycle.pause_flow(self._session, self.tenant_id, flow_id)
        return await read_flow_in(self._session, self.tenant_id, flow_id)

    async def resume(self, flow_id: uuid.UUID) -> FlowRecord:
        """PAUSED -> ACTIVE (`flow_lifecycle.resume_flow`); the caller releases held resumes after the commit."""
        await flow_lifecycle.resume_flow(self._session, self.tenant_id, flow_id)
        return await read_flow_in(self._session, self.tenant_id, flow_id)

    async def archive(self, flow_id: uuid.UUID) -> FlowRecord:
        """ACTIVE or PAUSED -> ARCHIVED (`flow_lifecycle.archive_flow`)."""
        await flow_lifecycle.archive_flow(self._session, self.tenant_id, flow_id)
        return await read_flow_in(self._session, self.tenant_id, flow_id)

    async def publish(self, flow_id: uuid.UUID, version_number: int, *, rollback: bool) -> FlowRecord:
        """See `publish_in`."""
        return await publish_in(self._session, self.tenant_id, flow_id, version_number, rollback=rollback)

    async def live_instances_elsewhere(self, flow_id: uuid.UUID, version_number: int) -> int:
        """Live instances of the flow on versions other than `version_number`."""
        return await live_instances_elsewhere_in(self._session, self.tenant_id, flow_id, version_number)


class FlowRepository(IdempotentRepository):
    """The calling tenant's flows and versions."""

    async def write(
        self,
        reply: Reply[_Result, _Response],
        work: Callable[[FlowTransaction], Awaitable[_Result]],
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> _Response:
        """Run `work` in one transaction with `request_id` replay (see `IdempotentRepository`); `prepare` runs
        before it, outside any transaction, unless the request only replays."""
        tenant_id = self.tenant_id

        async def scoped(session: AsyncSession) -> _Result:
            return await work(FlowTransaction(session, tenant_id))

        return await self._mutate_prepared(reply, scoped, prepare)

    async def replayed(self, reply: Reply[_Result, _Response]) -> _Response | None:
        """The stored answer of the request's `request_id`, if its call completed before."""
        return await self._replayed(reply)

    async def graph_to_activate(self, flow_id: uuid.UUID) -> tuple[int, dict[str, Any]]:
        """The number and graph of the version ActivateFlow would publish (errors as `draft_to_activate`)."""
        async with self._sessions() as session:
            await one_snapshot(session)
            _, version = await flow_lifecycle.draft_to_activate(session, self.tenant_id, flow_id, lock=False)
            return version.version_number, version.graph

    async def graph_to_publish(self, flow_id: uuid.UUID, version_number: int, *, rollback: bool) -> dict[str, Any]:
        """The graph of the version MigrateFlowVersion or a rollback would publish (errors as
        `publishable_version`)."""
        async with self._sessions() as session:
            await one_snapshot(session)
            _, version = await publishable_version(
                session, self.tenant_id, flow_id, version_number, rollback=rollback, lock=False
            )
            return version.graph

    async def require_taking_versions(self, flow_id: uuid.UUID) -> None:
        """NOT_FOUND, or INVALID_TRANSITION for an ARCHIVED flow: checked before a new version's graph is
        validated, so those errors come first, as they do in the transaction."""
        async with self._sessions() as session:
            await flow_taking_versions(session, self.tenant_id, flow_id, lock=False)

    async def get_flow(self, flow_id: uuid.UUID) -> FlowRecord:
        """One flow, or NOT_FOUND."""
        async with self._sessions() as session:
            return await read_flow_in(session, self.tenant_id, flow_id)

    async def list_flows(self, *, status: str | None, limit: int, after: PageCursor | None) -> list[FlowRecord]:
        """Flows newest first, keyset-paginated; up to `limit + 1` rows so the caller knows if more exist."""
        query = (
            select(Flow, _latest_version())
            .where(Flow.tenant_id == self.tenant_id)
            .order_by(Flow.create_time.desc(), Flow.id.desc())
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(Flow.status == status)
        if after is not None:
            query = query.where(tuple_(Flow.create_time, Flow.id) < _position(after))
        async with self._sessions() as session:
            return [_flow_record(row, latest) for row, latest in (await session.execute(query)).all()]

    async def get_version(self, flow_id: uuid.UUID, version_number: int) -> FlowVersionRecord:
        """One version; NOT_FOUND for an unknown flow or version."""
        async with self._sessions() as session:
            await read_flow_in(session, self.tenant_id, flow_id)
            return _version_record(await version_in(session, self.tenant_id, flow_id, version_number))

    async def list_versions(self, flow_id: uuid.UUID, *, limit: int, after: int | None) -> list[FlowVersionRecord]:
        """Versions newest first (by number); up to `limit + 1` rows. NOT_FOUND for an unknown flow."""
        query = (
            select(FlowVersion)
            .where(FlowVersion.tenant_id == self.tenant_id, FlowVersion.flow_id == flow_id)
            .order_by(FlowVersion.version_number.desc())
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(FlowVersion.version_number < after)
        async with self._sessions() as session:
            await read_flow_in(session, self.tenant_id, flow_id)
            return [_version_record(row) for row in (await session.scalars(query)).all()]

    async def migrations(self, flow_id: uuid.UUID, limit: int = 10) -> list[FlowMigration]:
        """The flow's MIGRATE_ALL jobs (the engine's), newest first."""
        async with self._sessions() as session:
            await read_flow_in(session, self.tenant_id, flow_id)
            found = await session.scalars(
                select(FlowMigration)
                .where(FlowMigration.tenant_id == self.tenant_id, FlowMigration.flow_id == flow_id)
                .order_by(FlowMigration.create_time.desc(), FlowMigration.id)
                .limit(limit)
            )
            return list(found)

    async def migration_status(self, flow_id: uuid.UUID) -> tuple[int, list[VersionCount]]:
        """The active version number and live instances per version (the active one always listed)."""
        async with self._sessions() as session:
            flow = await read_flow_in(session, self.tenant_id, flow_id)
            rows = (
                await session.execute(
                    select(FlowInstance.version_number, FlowInstance.status, func.count())
                    .where(
                        FlowInstance.tenant_id == self.tenant_id,
                        FlowInstance.flow_id == flow_id,
                        FlowInstance.status.in_(LIVE_STATUSES),
                    )
                    .group_by(FlowInstance.version_number, FlowInstance.status)
                )
            ).all()
        counts: dict[int, dict[str, int]] = {}
        for number, status, count in rows:
            counts.setdefault(number, {})[status] = int(count)
        if flow.active_version_number:
            counts.setdefault(flow.active_version_number, {})
        return flow.active_version_number, [
            VersionCount(
                number,
                by.get(InstanceStatus.RUNNING, 0),
                by.get(InstanceStatus.WAITING, 0),
                by.get(InstanceStatus.PAUSED, 0),
            )
            for number, by in sorted(counts.items())
        ]
