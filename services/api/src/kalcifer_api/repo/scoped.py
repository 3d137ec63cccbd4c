"""The base of every tenant-scoped repository: the tenant comes from the authenticated call, never a parameter.

A handler cannot forget the tenant, or pass the wrong one: repositories read `current_tenant_id()` (set by the
auth interceptor from the caller's API key) and put it in every query they build.
"""

from __future__ import annotations

import uuid

from kalcifer_common.rpc.auth import current_tenant_id
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class TenantScopedRepository:
    """Holds the session factory; `tenant_id` is the calling tenant of the RPC being handled."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @property
    def tenant_id(self) -> uuid.UUID:
        """The calling tenant; raises `Unauthenticated` outside an authenticated tenant call."""
        return current_tenant_id()

    @property
    def idempotency_scope(self) -> str:
        """The scope of `request_id`s: one namespace per tenant."""
        return str(self.tenant_id)
