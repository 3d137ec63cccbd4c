"""Customer profiles in PostgreSQL, always within the calling tenant."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import Customer
from kalcifer_common.errors import NotFound
from kalcifer_common.pagination import PageCursor
from kalcifer_common.profiles import merged_attributes
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.customers import (
    CustomerPatch,
    CustomerRecord,
    with_tags,
    without_tags,
)
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)


def customer_record(row: Customer) -> CustomerRecord:
    """Row -> domain."""
    return CustomerRecord(
        external_id=row.external_id,
        attributes=dict(row.attributes or {}),
        tags=list(row.tags or []),
        preferences={str(k): bool(v) for k, v in (row.preferences or {}).items()},
        timezone=row.timezone,
        email=row.email,
        phone=row.phone,
        create_time=row.create_time,
        update_time=row.update_time,
    )


class CustomerRepository(IdempotentRepository):
    """The calling tenant's customers, addressed by their external id."""

    async def _locked(self, session: AsyncSession, external_id: str) -> Customer:
        """The customer row, locked for the rest of the transaction so concurrent merges do not lose writes."""
        row = await session.scalar(
            select(Customer)
            .where(Customer.tenant_id == self.tenant_id, Customer.external_id == external_id)
            .with_for_update()
        )
        if row is None:
            raise NotFound("customer", external_id)
        return row

    async def _change(
        self,
        external_id: str,
        reply: Reply[CustomerRecord, _Response],
        edit: Callable[[Customer], None],
    ) -> _Response:
        async def work(session: AsyncSession) -> CustomerRecord:
            row = await self._locked(session, external_id)
            edit(row)
            await session.flush()
            return customer_record(row)

        return await self._mutate(reply, work)

    async def upsert(self, patch: CustomerPatch, reply: Reply[CustomerRecord, _Response]) -> _Response:
        """Create the profile or merge `patch` into the existing one (see `CustomerPatch`)."""

        def merge(row: Customer) -> None:
            row.attributes = merged_attributes(row.attributes or {}, patch.attributes)
            row.tags = with_tags(row.tags or [], patch.tags)
            row.preferences = {**(row.preferences or {}), **patch.preferences}
            if patch.timezone is not None:
                row.timezone = patch.timezone
            if patch.email is not None:
                row.email = patch.email
            if patch.phone is not None:
                row.phone = patch.phone

        async def work(session: AsyncSession) -> CustomerRecord:
            # Create-if-absent first, so that concurrent upserts of a new customer all end up merging into one row.
            await session.execute(
                insert(Customer)
                .values(id=uuid.uuid4(), tenant_id=self.tenant_id, external_id=patch.external_id)
                .on_conflict_do_nothing(index_elements=[Customer.tenant_id, Customer.external_id])
            )
            row = await self._locked(session, patch.external_id)
            merge(row)
            await session.flush()
            return customer_record(row)

        return await self._mutate(reply, work)

    async def get(self, external_id: str) -> CustomerRecord:
        """One customer, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(Customer).where(Customer.tenant_id == self.tenant_id, Customer.external_id == external_id)
            )
        if row is None:
            raise NotFound("customer", external_id)
        return customer_record(row)

    async def list_page(
        self, *, tag: str, limit: int, after: PageCursor | None
    ) -> list[tuple[uuid.UUID, CustomerRecord]]:
        """Customers oldest first (with their row ids, the keyset's tiebreak), `limit + 1` of them at most."""
        query = (
            select(Customer)
            .where(Customer.tenant_id == self.tenant_id)
            .order_by(Customer.create_time, Customer.id)
            .limit(limit + 1)
        )
        if tag:
            query = query.where(Customer.tags.contains([tag]))
        if after is not None:
            position: Any = tuple_(*after.time_and_id())
            query = query.where(tuple_(Customer.create_time, Customer.id) > position)
        async with self._sessions() as session:
            return [(row.id, customer_record(row)) for row in (await session.scalars(query)).all()]

    async def add_tags(self, external_id: str, tags: list[str], reply: Reply[CustomerRecord, _Response]) -> _Response:
        """Append the tags the customer does not have yet."""

        def edit(row: Customer) -> None:
            row.tags = with_tags(row.tags or [], tags)

        return await self._change(external_id, reply, edit)

    async def remove_tags(
        self, external_id: str, tags: list[str], reply: Reply[CustomerRecord, _Response]
    ) -> _Response:
        """Drop the named tags; absent ones are ignored."""

        def edit(row: Customer) -> None:
            row.tags = without_tags(row.tags or [], tags)

        return await self._change(external_id, reply, edit)

    async def set_preferences(
        self, external_id: str, channels: dict[str, bool], reply: Reply[CustomerRecord, _Response]
    ) -> _Response:
        """Merge channel opt-ins; channels not named keep their value."""

        def edit(row: Customer) -> None:
            row.preferences = {**(row.preferences or {}), **channels}

        return await self._change(external_id, reply, edit)

    async def delete(self, external_id: str, reply: Reply[None, _Response]) -> _Response:
        """Erase the profile (attributes, tags, preferences, contact data); the contract keeps its instances and
        history, which reference the participant id only."""

        async def work(session: AsyncSession) -> None:
            deleted = await session.scalar(
                delete(Customer)
                .where(Customer.tenant_id == self.tenant_id, Customer.external_id == external_id)
                .returning(Customer.id)
            )
            if deleted is None:
                raise NotFound("customer", external_id)

        return await self._mutate(reply, work)
