"""Journeys in PostgreSQL, always within the calling tenant; lifecycle moves drive the wrapped flow's status in the
same transaction (through `kalcifer_api.flow_lifecycle`), so a journey and its flow never disagree after a commit;
the engine then carries the flow's new status to its instances."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import Flow, Journey, Segment
from kalcifer_common.errors import EtagMismatch, FailedPrecondition, InvalidArgument, NotFound
from kalcifer_common.pagination import PageCursor
from kalcifer_common.statuses import FlowStatus, JourneyStatus
from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.journeys import (
    FLOW_NOT_ACTIVE,
    JourneyDraft,
    JourneyRecord,
    Transition,
    require_draft,
    require_transition,
)
from kalcifer_api.domain.marketing_common import check_etag
from kalcifer_api.domain.marketing_settings import MarketingSettings
from kalcifer_api.repo import flow_lifecycle
from kalcifer_api.repo.flows import one_snapshot
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)

# Journey fields that are columns of their own, and the settings stored as JSON columns of the same name.
_SETTING_COLUMNS = ("entry_schedule", "goals", "exit_criteria", "frequency_cap", "quiet_hours", "re_entry")


def journey_record(row: Journey) -> JourneyRecord:
    """Row -> domain."""
    return JourneyRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        flow_id=row.flow_id,
        status=row.status,
        settings=MarketingSettings(
            audience_segment_id=row.audience_segment_id,
            entry_schedule=row.entry_schedule,
            goals=list(row.goals or []),
            exit_criteria=list(row.exit_criteria or []),
            frequency_cap=row.frequency_cap,
            quiet_hours=row.quiet_hours,
            re_entry=row.re_entry,
        ),
        revision=row.revision,
        create_time=row.create_time,
        update_time=row.update_time,
    )


class JourneyRepository(IdempotentRepository):
    """The calling tenant's journeys."""

    async def _require_flow(self, session: AsyncSession, flow_id: uuid.UUID) -> None:
        found = await session.scalar(select(Flow.id).where(Flow.tenant_id == self.tenant_id, Flow.id == flow_id))
        if found is None:
            raise NotFound("flow", str(flow_id))

    async def _require_segment(self, session: AsyncSession, segment_id: uuid.UUID | None) -> None:
        if segment_id is None:
            return
        # FOR SHARE: a concurrent DeleteSegment waits for this transaction and then sees the journey using it.
        found = await session.scalar(
            select(Segment.id)
            .where(Segment.tenant_id == self.tenant_id, Segment.id == segment_id)
            .with_for_update(read=True)
        )
        if found is None:
            raise NotFound("segment", str(segment_id))

    async def _locked(self, session: AsyncSession, journey_id: uuid.UUID) -> Journey:
        row = await session.scalar(
            select(Journey)
            .where(Journey.tenant_id == self.tenant_id, Journey.id == journey_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound("journey", str(journey_id))
        return row

    async def create(self, draft: JourneyDraft, reply: Reply[JourneyRecord, _Response]) -> _Response:
        """A DRAFT journey around an existing flow of the tenant (NOT_FOUND for a missing flow or segment)."""
        flow_id = draft.flow_id
        if flow_id is None:
            raise InvalidArgument.single("flow_id", "is required")

        async def work(session: AsyncSession) -> JourneyRecord:
            await self._require_flow(session, flow_id)
            await self._require_segment(session, draft.settings.audience_segment_id)
            settings = draft.settings
            row = Journey(
                id=uuid.uuid4(),
                tenant_id=self.tenant_id,
                flow_id=flow_id,
                name=draft.name,
                description=draft.description,
                audience_segment_id=settings.audience_segment_id,
                **{column: getattr(settings, column) for column in _SETTING_COLUMNS},
            )
            session.add(row)
            await session.flush()
            return journey_record(row)

        return await self._mutate(reply, work)

    async def get(self, journey_id: uuid.UUID) -> JourneyRecord:
        """One journey, or NOT_FOUND."""
        async with self._sessions() as session:
            await one_snapshot(session)
            row = await session.scalar(
                select(Journey).where(Journey.tenant_id == self.tenant_id, Journey.id == journey_id)
            )
        if row is None:
            raise NotFound("journey", str(journey_id))
        return journey_record(row)

    async def list_page(self, *, status: str, limit: int, after: PageCursor | None) -> list[JourneyRecord]:
        """Journeys newest first, optionally of one status; `limit + 1` of them at most."""
        query = (
            select(Journey)
            .where(Journey.tenant_id == self.tenant_id)
            .order_by(Journey.create_time.desc(), Journey.id.desc())
            .limit(limit + 1)
        )
        if status:
            query = query.where(Journey.status == status)
        if after is not None:
            position: Any = tuple_(*after.time_and_id())
            query = query.where(tuple_(Journey.create_time, Journey.id) < position)
        async with self._sessions() as session:
            return [journey_record(row) for row in (await session.scalars(query)).all()]

    async def update(
        self,
        journey_id: uuid.UUID,
        draft: JourneyDraft,
        fields: frozenset[str],
        etag: str,
        reply: Reply[JourneyRecord, _Response],
    ) -> _Response:
        """Replace `fields` of a DRAFT journey (ABORTED on a stale etag, JOURNEY_NOT_DRAFT once launched)."""

        async def work(session: AsyncSession) -> JourneyRecord:
            row = await self._locked(session, journey_id)
            check_etag(etag, row.revision, resource_type="journey", resource_name=str(journey_id))
            require_draft(row.id, row.status, "update")
            if "flow_id" in fields and draft.flow_id is not None:
                await self._require_flow(session, draft.flow_id)
                row.flow_id = draft.flow_id
            if "audience_segment_id" in fields:
                await self._require_segment(session, draft.settings.audience_segment_id)
                row.audience_segment_id = draft.settings.audience_segment_id
            if "name" in fields:
                row.name = draft.name
            if "description" in fields:
                row.description = draft.description
            for column in _SETTING_COLUMNS:
                if column in fields:
                    setattr(row, column, getattr(draft.settings, column))
            # Always an UPDATE, even when nothing changed: the revision (etag) and update_time move on every write.
            row.update_time = func.now()
            await session.flush()
            await session.refresh(row)
            return journey_record(row)

        return await self._mutate(reply, work)

    async def delete(self, journey_id: uuid.UUID, etag: str, reply: Reply[None, _Response]) -> _Response:
        """Delete a DRAFT journey; its flow is kept."""

        async def work(session: AsyncSession) -> None:
            row = await self._locked(session, journey_id)
            check_etag(etag, row.revision, resource_type="journey", resource_name=str(journey_id))
            require_draft(row.id, row.status, "delete")
            await session.execute(delete(Journey).where(Journey.tenant_id == self.tenant_id, Journey.id == row.id))

        return await self._mutate(reply, work)

    async def flow_to_launch(self, journey_id: uuid.UUID) -> tuple[int, dict[str, Any]] | None:
        """Before LaunchJourney's transaction: the number and graph of the version launching would publish, when
        the journey's flow is still a DRAFT (None otherwise: nothing to validate). Unlocked reads."""
        async with self._sessions() as session:
            await one_snapshot(session)
            row = await session.scalar(
                select(Journey).where(Journey.tenant_id == self.tenant_id, Journey.id == journey_id)
            )
            if row is None:
                raise NotFound("journey", str(journey_id))
            flow = await flow_lifecycle.lock_flow(session, self.tenant_id, row.flow_id, lock=False)
            if flow.status != FlowStatus.DRAFT or row.status != JourneyStatus.DRAFT:
                return None
            _, version = await flow_lifecycle.draft_to_activate(session, self.tenant_id, flow.id, lock=False)
            return version.version_number, version.graph

    async def move(
        self,
        journey_id: uuid.UUID,
        transition: Transition,
        reply: Reply[JourneyRecord, _Response],
        *,
        validated_version: list[int],
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[_Response, list[tuple[uuid.UUID, str]]]:
        """Apply a lifecycle transition to the journey and its flow's status in one transaction; returns the
        answer and the flows whose new status the engine must carry to their instances (none on a replay).

        The journey row is locked first, then the flow row (always in that order, so two journeys on one flow
        cannot deadlock). The flow follows where it can: launching activates a DRAFT flow (publishing its newest
        draft version, which `prepare` validated: `validated_version`; an ACTIVE flow is used as is; a PAUSED or
        ARCHIVED one is FLOW_NOT_ACTIVE) and gives it the journey's re-entry policy; pausing pauses an ACTIVE flow;
        resuming resumes a PAUSED flow (an ARCHIVED one is FLOW_NOT_ACTIVE); archiving archives a flow that is not
        archived yet.
        """
        moved_flow: list[tuple[uuid.UUID, str]] = []

        async def work(session: AsyncSession) -> JourneyRecord:
            moved_flow.clear()
            row = await self._locked(session, journey_id)
            require_transition(row.id, row.status, transition)
            flow = await flow_lifecycle.lock_flow(session, self.tenant_id, row.flow_id)
            if transition is Transition.LAUNCH:
                await self._launch_flow(session, flow, row.re_entry, validated_version)
            elif transition is Transition.PAUSE and flow.status == FlowStatus.ACTIVE:
                await flow_lifecycle.pause_flow(session, self.tenant_id, flow.id)
                moved_flow.append((flow.id, FlowStatus.PAUSED))
            elif transition is Transition.RESUME:
                if flow.status == FlowStatus.ARCHIVED:
                    raise _flow_not_active(flow, "resume")
                if flow.status == FlowStatus.PAUSED:
                    await flow_lifecycle.resume_flow(session, self.tenant_id, flow.id)
                    moved_flow.append((flow.id, FlowStatus.ACTIVE))
            elif transition is Transition.ARCHIVE and flow.status in (FlowStatus.ACTIVE, FlowStatus.PAUSED):
                await flow_lifecycle.archive_flow(session, self.tenant_id, flow.id)
                moved_flow.append((flow.id, FlowStatus.ARCHIVED))
            row.status = transition.target
            await session.flush()
            await session.refresh(row)
            return journey_record(row)

        response = await self._mutate_prepared(reply, work, prepare)
        return response, moved_flow

    async def _launch_flow(
        self, session: AsyncSession, flow: Flow, re_entry: str, validated_version: list[int]
    ) -> None:
        if flow.status == FlowStatus.DRAFT:
            if not validated_version:  # the flow was not a draft when the launch was prepared
                raise EtagMismatch("flow", str(flow.id))
            await flow_lifecycle.activate_flow(
                session, self.tenant_id, flow.id, validated_version=validated_version[-1]
            )
        elif flow.status != FlowStatus.ACTIVE:
            raise _flow_not_active(flow, "launch")
        # The journey's re-entry policy is what the engine enforces when participants enter the flow.
        await session.execute(update(Flow).where(Flow.id == flow.id).values(re_entry=re_entry))


def _flow_not_active(flow: Flow, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        FLOW_NOT_ACTIVE,
        f"cannot {action} the journey: its flow {flow.id} is {flow.status.upper()}",
        metadata={"flow_id": str(flow.id), "status": flow.status.upper()},
    )
