"""Segments in PostgreSQL, always within the calling tenant."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import Journey, Segment
from kalcifer_common.errors import AlreadyExists, FailedPrecondition, NotFound
from kalcifer_common.pagination import PageCursor
from sqlalchemy import delete, exists, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.marketing_common import check_etag
from kalcifer_api.domain.segments import SegmentDefinition, SegmentRecord
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)

SEGMENT_IN_USE = "SEGMENT_IN_USE"


def segment_record(row: Segment) -> SegmentRecord:
    """Row -> domain."""
    return SegmentRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        match=row.match,
        rules=list(row.rules or []),
        revision=row.revision,
        create_time=row.create_time,
        update_time=row.update_time,
    )


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    """Flush; a concurrent writer that took the name between our check and our write is ALREADY_EXISTS too."""
    try:
        await session.flush()
    except IntegrityError as error:
        if "uq_segments_tenant_id_name" in str(error.orig):
            raise AlreadyExists(f"a segment named {name!r} already exists") from None
        raise


class SegmentRepository(IdempotentRepository):
    """The calling tenant's segments."""

    async def _name_taken(self, session: AsyncSession, name: str, *, other_than: uuid.UUID | None = None) -> None:
        """ALREADY_EXISTS when another segment of the tenant has this name (names are how marketers find them)."""
        query = select(Segment.id).where(Segment.tenant_id == self.tenant_id, Segment.name == name)
        if other_than is not None:
            query = query.where(Segment.id != other_than)
        if await session.scalar(query) is not None:
            raise AlreadyExists(f"a segment named {name!r} already exists")

    async def _locked(self, session: AsyncSession, segment_id: uuid.UUID) -> Segment:
        row = await session.scalar(
            select(Segment).where(Segment.tenant_id == self.tenant_id, Segment.id == segment_id).with_for_update()
        )
        if row is None:
            raise NotFound("segment", str(segment_id))
        return row

    async def create(self, definition: SegmentDefinition, reply: Reply[SegmentRecord, _Response]) -> _Response:
        """A new segment; its name must be free in the tenant."""

        async def work(session: AsyncSession) -> SegmentRecord:
            await self._name_taken(session, definition.name)
            row = Segment(
                id=uuid.uuid4(),
                tenant_id=self.tenant_id,
                name=definition.name,
                description=definition.description,
                match=definition.match,
                rules=definition.rules,
            )
            session.add(row)
            await _flush_unique_name(session, definition.name)
            return segment_record(row)

        return await self._mutate(reply, work)

    async def get(self, segment_id: uuid.UUID) -> SegmentRecord:
        """One segment, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(Segment).where(Segment.tenant_id == self.tenant_id, Segment.id == segment_id)
            )
        if row is None:
            raise NotFound("segment", str(segment_id))
        return segment_record(row)

    async def list_page(self, *, limit: int, after: PageCursor | None) -> list[SegmentRecord]:
        """Segments newest first, `limit + 1` of them at most (the extra one says another page exists)."""
        query = (
            select(Segment)
            .where(Segment.tenant_id == self.tenant_id)
            .order_by(Segment.create_time.desc(), Segment.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            position: Any = tuple_(*after.time_and_id())
            query = query.where(tuple_(Segment.create_time, Segment.id) < position)
        async with self._sessions() as session:
            return [segment_record(row) for row in (await session.scalars(query)).all()]

    async def update(
        self,
        segment_id: uuid.UUID,
        definition: SegmentDefinition,
        fields: frozenset[str],
        etag: str,
        reply: Reply[SegmentRecord, _Response],
    ) -> _Response:
        """Replace `fields` of the segment with the definition's values; a non-empty stale etag is ABORTED."""

        async def work(session: AsyncSession) -> SegmentRecord:
            row = await self._locked(session, segment_id)
            check_etag(etag, row.revision, resource_type="segment", resource_name=str(segment_id))
            if "name" in fields and definition.name != row.name:
                await self._name_taken(session, definition.name, other_than=row.id)
            for name in fields:
                setattr(row, name, getattr(definition, name))
            # Always an UPDATE, even when nothing changed: the revision (etag) and update_time move on every write.
            row.update_time = func.now()
            await _flush_unique_name(session, row.name)
            await session.refresh(row)
            return segment_record(row)

        return await self._mutate(reply, work)

    async def delete(self, segment_id: uuid.UUID, etag: str, reply: Reply[None, _Response]) -> _Response:
        """Delete a segment that no journey uses as its audience (FAILED_PRECONDITION SEGMENT_IN_USE otherwise)."""

        async def work(session: AsyncSession) -> None:
            row = await self._locked(session, segment_id)
            check_etag(etag, row.revision, resource_type="segment", resource_name=str(segment_id))
            in_use = await session.scalar(
                select(exists().where(Journey.tenant_id == self.tenant_id, Journey.audience_segment_id == row.id))
            )
            if in_use:
                raise FailedPrecondition(
                    SEGMENT_IN_USE,
                    f"segment {segment_id} is the audience of a journey; change that journey's audience first",
                    metadata={"segment_id": str(segment_id)},
                )
            await session.execute(delete(Segment).where(Segment.tenant_id == self.tenant_id, Segment.id == row.id))

        return await self._mutate(reply, work)
