"""Tenants and their API keys in PostgreSQL.

Creating a tenant or a key honours `request_id` like every mutating call (scope `admin`): a retry answers the
same tenant and key. The raw key is shown once and never stored, not even in the idempotency record: a replayed
answer carries an empty `raw_key` (mint another key with CreateApiKey if the first answer was lost).
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.db.models import ApiKey, Tenant
from kalcifer_common.errors import NotFound
from kalcifer_common.pagination import PageCursor
from kalcifer_common.rpc.auth import ApiKeyIdentity
from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.tenants import ApiKeyRecord, TenantRecord
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)
# The idempotency scope of operator calls (TenantService is not tenant-scoped).
ADMIN_SCOPE = "admin"


def _tenant(row: Tenant) -> TenantRecord:
    return TenantRecord(id=row.id, name=row.name, create_time=row.create_time, update_time=row.update_time)


def _api_key(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        key_prefix=row.key_prefix,
        create_time=row.create_time,
        revoke_time=row.revoke_time,
    )


def _position(cursor: PageCursor) -> Any:
    return tuple_(*cursor.time_and_id())


class TenantRepository(IdempotentRepository):
    """Tenants and API keys; the operator-only side of the data model (not tenant-scoped: its `request_id`s
    live in the operator's own scope)."""

    @property
    def idempotency_scope(self) -> str:
        """Operator calls share one `request_id` namespace."""
        return ADMIN_SCOPE

    async def create_tenant(
        self,
        name: str,
        *,
        key_name: str,
        key_hash: str,
        key_prefix: str,
        reply: Reply[tuple[TenantRecord, ApiKeyRecord], _Response],
    ) -> _Response:
        """A tenant and its first API key, in one transaction; a repeated `request_id` replays the answer."""

        async def work(session: AsyncSession) -> tuple[TenantRecord, ApiKeyRecord]:
            tenant = Tenant(id=uuid.uuid4(), name=name)
            session.add(tenant)
            await session.flush()
            key = ApiKey(id=uuid.uuid4(), tenant_id=tenant.id, name=key_name, key_hash=key_hash, key_prefix=key_prefix)
            session.add(key)
            await session.flush()
            await session.refresh(tenant)
            await session.refresh(key)
            return _tenant(tenant), _api_key(key)

        return await self._mutate(reply, work)

    async def get_tenant(self, tenant_id: uuid.UUID) -> TenantRecord:
        """One tenant, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.get(Tenant, tenant_id)
            if row is None:
                raise NotFound("tenant", str(tenant_id))
            return _tenant(row)

    async def list_tenants(self, *, limit: int, after: PageCursor | None) -> list[TenantRecord]:
        """Tenants oldest first, keyset-paginated; returns up to `limit + 1` rows so callers know if more exist."""
        query = select(Tenant).order_by(Tenant.create_time, Tenant.id).limit(limit + 1)
        if after is not None:
            query = query.where(tuple_(Tenant.create_time, Tenant.id) > _position(after))
        async with self._sessions() as session:
            return [_tenant(row) for row in (await session.scalars(query)).all()]

    async def create_api_key(
        self, tenant_id: uuid.UUID, *, name: str, key_hash: str, key_prefix: str, reply: Reply[ApiKeyRecord, _Response]
    ) -> _Response:
        """Another key for an existing tenant; a repeated `request_id` replays the answer."""

        async def work(session: AsyncSession) -> ApiKeyRecord:
            if await session.get(Tenant, tenant_id) is None:
                raise NotFound("tenant", str(tenant_id))
            key = ApiKey(id=uuid.uuid4(), tenant_id=tenant_id, name=name, key_hash=key_hash, key_prefix=key_prefix)
            session.add(key)
            await session.flush()
            await session.refresh(key)
            return _api_key(key)

        return await self._mutate(reply, work)

    async def list_api_keys(self, tenant_id: uuid.UUID, *, limit: int, after: PageCursor | None) -> list[ApiKeyRecord]:
        """A tenant's keys (revoked ones included), oldest first."""
        async with self._sessions() as session:
            if await session.get(Tenant, tenant_id) is None:
                raise NotFound("tenant", str(tenant_id))
            query = (
                select(ApiKey)
                .where(ApiKey.tenant_id == tenant_id)
                .order_by(ApiKey.create_time, ApiKey.id)
                .limit(limit + 1)
            )
            if after is not None:
                query = query.where(tuple_(ApiKey.create_time, ApiKey.id) > _position(after))
            return [_api_key(row) for row in (await session.scalars(query)).all()]

    async def revoke_api_key(self, key_id: uuid.UUID) -> ApiKeyRecord:
        """Mark a key revoked (idempotent: revoking twice keeps the first revoke time)."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoke_time.is_(None)).values(revoke_time=func.now())
            )
            row = await session.get(ApiKey, key_id, populate_existing=True)
            if row is None:
                raise NotFound("api key", str(key_id))
            return _api_key(row)

    async def identity_of(self, key_hash: str) -> ApiKeyIdentity | None:
        """The tenant behind a live key's hash; None if unknown or revoked."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoke_time.is_(None))
                )
            ).first()
        if row is None:
            return None
        return ApiKeyIdentity(tenant_id=row.tenant_id, api_key_id=row.id)
