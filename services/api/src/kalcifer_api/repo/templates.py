"""Message templates in PostgreSQL, always within the calling tenant."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import Flow, FlowVersion, Template
from kalcifer_common.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from kalcifer_common.pagination import PageCursor
from kalcifer_common.statuses import FlowStatus
from sqlalchemy import delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.marketing_common import check_etag
from kalcifer_api.domain.templates import (
    MAX_TEMPLATES_PER_TENANT,
    QUOTA_REASON,
    TEMPLATE_IN_USE,
    TemplateDefinition,
    TemplateRecord,
)
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)


def template_record(row: Template) -> TemplateRecord:
    """Row -> domain."""
    return TemplateRecord(
        id=row.id,
        channel=row.channel,
        subject=row.subject,
        body=row.body,
        html_body=row.html_body,
        description=row.description,
        revision=row.revision,
        create_time=row.create_time,
        update_time=row.update_time,
    )


class TemplateRepository(IdempotentRepository):
    """The calling tenant's templates."""

    async def _locked(self, session: AsyncSession, template_id: str) -> Template:
        row = await session.scalar(
            select(Template).where(Template.tenant_id == self.tenant_id, Template.id == template_id).with_for_update()
        )
        if row is None:
            raise NotFound("template", template_id)
        return row

    async def create(
        self, template_id: str, channel: str, definition: TemplateDefinition, reply: Reply[TemplateRecord, _Response]
    ) -> _Response:
        """A new template; its id must be free in the tenant, and the tenant under its quota."""

        async def work(session: AsyncSession) -> TemplateRecord:
            # Creates of one tenant take turns here, so two cannot both pass the quota check at its last slot.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended('templates:' || :tenant, 0))"),
                {"tenant": str(self.tenant_id)},
            )
            if await session.get(Template, (self.tenant_id, template_id)) is not None:
                raise AlreadyExists(f"a template with id {template_id!r} already exists")
            count = await session.scalar(select(func.count()).where(Template.tenant_id == self.tenant_id))
            if (count or 0) >= MAX_TEMPLATES_PER_TENANT:
                raise ResourceExhausted(
                    QUOTA_REASON, f"a tenant has at most {MAX_TEMPLATES_PER_TENANT} templates; delete one first"
                )
            row = Template(
                tenant_id=self.tenant_id,
                id=template_id,
                channel=channel,
                subject=definition.subject,
                body=definition.body,
                html_body=definition.html_body,
                description=definition.description,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(f"a template with id {template_id!r} already exists") from None
            return template_record(row)

        return await self._mutate(reply, work)

    async def get(self, template_id: str) -> TemplateRecord:
        """One template, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.get(Template, (self.tenant_id, template_id))
        if row is None:
            raise NotFound("template", template_id)
        return template_record(row)

    async def list_page(self, *, channel: str, limit: int, after: PageCursor | None) -> list[TemplateRecord]:
        """Templates by id (optionally of one channel), `limit + 1` at most (the extra one says a page follows)."""
        query = select(Template).where(Template.tenant_id == self.tenant_id).order_by(Template.id).limit(limit + 1)
        if channel:
            query = query.where(Template.channel == channel)
        if after is not None:
            query = query.where(Template.id > after.last_id)
        async with self._sessions() as session:
            return [template_record(row) for row in (await session.scalars(query)).all()]

    async def update(
        self,
        template_id: str,
        definition: TemplateDefinition,
        fields: frozenset[str],
        etag: str,
        reply: Reply[TemplateRecord, _Response],
    ) -> _Response:
        """Replace `fields` of the template; a non-empty stale etag is ABORTED."""

        async def work(session: AsyncSession) -> TemplateRecord:
            row = await self._locked(session, template_id)
            check_etag(etag, row.revision, resource_type="template", resource_name=template_id)
            for name in fields:
                setattr(row, name, getattr(definition, name))
            # Always an UPDATE, even when nothing changed: the revision (etag) and update_time move on every write.
            row.update_time = func.now()
            await session.flush()
            await session.refresh(row)
            return template_record(row)

        return await self._mutate(reply, work)

    async def delete(self, template_id: str, etag: str, reply: Reply[None, _Response]) -> _Response:
        """Delete a template no version of a live flow names (FAILED_PRECONDITION TEMPLATE_IN_USE otherwise)."""

        async def work(session: AsyncSession) -> None:
            row = await self._locked(session, template_id)
            check_etag(etag, row.revision, resource_type="template", resource_name=template_id)
            naming = literal({"nodes": [{"config": {"template_id": template_id}}]}, type_=JSONB)
            user = await session.scalar(
                select(FlowVersion.flow_id)
                .join(Flow, (Flow.id == FlowVersion.flow_id) & (Flow.tenant_id == FlowVersion.tenant_id))
                .where(
                    FlowVersion.tenant_id == self.tenant_id,
                    Flow.status != FlowStatus.ARCHIVED,
                    FlowVersion.graph.op("@>")(naming),
                )
                .limit(1)
            )
            if user is not None:
                raise FailedPrecondition(
                    TEMPLATE_IN_USE,
                    f"template {template_id!r} is named by a version of flow {user}; change that flow or archive it "
                    "first",
                    metadata={"template_id": template_id, "flow_id": str(user)},
                )
            await session.execute(
                delete(Template).where(Template.tenant_id == self.tenant_id, Template.id == template_id)
            )

        return await self._mutate(reply, work)
