"""Message templates (`templates`, written by the API): the engine only reads which exist, for graph validation.

Like `node_types`, a read here opens its own session: validation runs outside any run's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from kalcifer_common.db.models import Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def template_channels(
    sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, template_ids: Collection[str]
) -> dict[str, str]:
    """The channel of each of `template_ids` the tenant has (one query; absent ids are absent)."""
    if not template_ids:
        return {}
    query = select(Template.id, Template.channel).where(
        Template.tenant_id == tenant_id, Template.id.in_(sorted(template_ids))
    )
    async with sessions() as session:
        return {row.id: row.channel for row in (await session.execute(query)).all()}
