"""Channel providers in PostgreSQL (`provider_configs`), always within the calling tenant.

The API is the one writer of `provider_configs`; the scheduler reads it when it sends. Sealed secrets are written
here and never read back out of this module except as their names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import ProviderConfig
from kalcifer_common.errors import NotFound
from kalcifer_common.pagination import PageCursor
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.channels import ProviderChange, ProviderRecord, StoredSecrets
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)


def provider_record(row: ProviderConfig) -> ProviderRecord:
    """Row -> domain; of the secrets, only their names."""
    return ProviderRecord(
        channel=row.channel,
        provider=row.provider,
        settings=dict(row.settings or {}),
        secret_names=tuple(sorted(row.secrets or {})),
        create_time=row.create_time,
        update_time=row.update_time,
    )


class ChannelRepository(IdempotentRepository):
    """The calling tenant's channel providers."""

    async def set(
        self,
        channel: str,
        plan: Callable[[StoredSecrets | None], ProviderChange],
        reply: Reply[ProviderRecord, _Response],
    ) -> _Response:
        """Create or replace the channel's provider with `plan(what is stored)` (which may raise)."""

        async def work(session: AsyncSession) -> ProviderRecord:
            stored = await session.scalar(
                select(ProviderConfig)
                .where(ProviderConfig.tenant_id == self.tenant_id, ProviderConfig.channel == channel)
                .with_for_update()
            )
            change = plan(None if stored is None else StoredSecrets(stored.provider, dict(stored.secrets or {})))
            values = {"provider": change.provider, "settings": change.settings, "secrets": change.sealed}
            statement = (
                insert(ProviderConfig)
                .values(tenant_id=self.tenant_id, channel=channel, **values)
                .on_conflict_do_update(
                    index_elements=[ProviderConfig.tenant_id, ProviderConfig.channel],
                    set_={**values, "update_time": func.now()},
                )
                .returning(ProviderConfig)
            )
            row = (await session.scalars(statement, execution_options={"populate_existing": True})).one()
            return provider_record(row)

        return await self._mutate(reply, work)

    async def get(self, channel: str) -> ProviderRecord:
        """The channel's provider, or NOT_FOUND (the channel sends through `log`)."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(ProviderConfig).where(
                    ProviderConfig.tenant_id == self.tenant_id, ProviderConfig.channel == channel
                )
            )
        if row is None:
            raise NotFound("channel provider", channel)
        return provider_record(row)

    async def list_page(self, *, limit: int, after: PageCursor | None) -> list[ProviderRecord]:
        """Configured channels by name, `limit + 1` at most (the extra one says another page exists)."""
        query = (
            select(ProviderConfig)
            .where(ProviderConfig.tenant_id == self.tenant_id)
            .order_by(ProviderConfig.channel)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(ProviderConfig.channel > after.last_id)
        async with self._sessions() as session:
            return [provider_record(row) for row in (await session.scalars(query)).all()]

    async def delete(self, channel: str, reply: Reply[None, _Response]) -> _Response:
        """Remove the channel's provider and its secrets, or NOT_FOUND."""

        async def work(session: AsyncSession) -> None:
            deleted = await session.execute(
                delete(ProviderConfig)
                .where(ProviderConfig.tenant_id == self.tenant_id, ProviderConfig.channel == channel)
                .returning(ProviderConfig.id)
            )
            if deleted.first() is None:
                raise NotFound("channel provider", channel)

        return await self._mutate(reply, work)
