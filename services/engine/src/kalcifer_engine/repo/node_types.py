"""Tenants' webhook node types in PostgreSQL (`node_types`), so every engine replica sees the same registry.

Every query names the tenant: one tenant's types are invisible to every other. Unlike the rest of `repo`, a
`NodeTypeStore` opens its own sessions: a read is one query, and each write is one transaction of its own (the
quota check under a per-tenant advisory lock, then the upsert), never part of a run. A row is checked when it is
written and once more the first time this process loads that version of it (`update_time`): a row that no longer
passes, e.g. after a stricter rule shipped, is logged and left out rather than breaking every graph of its
tenant; later loads of the same version reuse the checked definition. A tenant has at most
`MAX_NODE_TYPES_PER_TENANT` types.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Final

from kalcifer_common.db.models import NodeType as NodeTypeRow
from kalcifer_common.errors import InvalidArgument, ResourceExhausted
from kalcifer_common.logging import get_logger
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kalcifer_engine.nodes.webhook import WebhookNodeType

_log = get_logger(__name__)

# The engine posts to a tenant's endpoint with this timeout unless the row says otherwise.
DEFAULT_TIMEOUT_MS = 5000
MAX_NODE_TYPES_PER_TENANT: Final = 100
QUOTA_REASON: Final = "NODE_TYPE_QUOTA_EXCEEDED"
_CHECKED_ROWS: Final = 4096


class _CheckedRows:
    """Definitions by row version (id, update_time), bounded LRU: a row version never changes once written."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[uuid.UUID, datetime], WebhookNodeType | None] = OrderedDict()

    def definition(self, row: NodeTypeRow) -> WebhookNodeType | None:
        version = (row.id, row.update_time)
        if version in self.entries:
            self.entries.move_to_end(version)
            return self.entries[version]
        checked = self.entries[version] = _from_row(row)
        while len(self.entries) > _CHECKED_ROWS:
            self.entries.popitem(last=False)
        return checked


_checked = _CheckedRows()


def _from_row(row: NodeTypeRow) -> WebhookNodeType | None:
    try:
        return WebhookNodeType(
            key=row.key,
            category=row.category,
            description=row.description,
            config_schema=row.config_schema,
            branches=[str(b) for b in row.branches],
            resumable=row.resumable,
            endpoint_url=row.endpoint_url,
            timeout_ms=row.timeout_ms,
        )
    except (InvalidArgument, ValueError) as error:
        _log.error(
            "stored webhook node type is no longer valid; ignored",
            tenant_id=str(row.tenant_id),
            key=row.key,
            error=str(error),
        )
        return None


class NodeTypeStore:
    """Reads and writes one tenant's webhook node types."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def load(self, tenant_id: uuid.UUID) -> list[WebhookNodeType]:
        """The tenant's webhook node types, by key."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(NodeTypeRow).where(NodeTypeRow.tenant_id == tenant_id).order_by(NodeTypeRow.key)
                )
            ).all()
        return [node_type for row in rows if (node_type := _checked.definition(row)) is not None]

    async def upsert(self, tenant_id: uuid.UUID, node_type: WebhookNodeType) -> WebhookNodeType:
        """Store `node_type` for the tenant; a key the tenant already has is updated in place. A new key past the
        tenant's quota is RESOURCE_EXHAUSTED (`NODE_TYPE_QUOTA_EXCEEDED`)."""
        values = {
            "key": node_type.key,
            "category": str(node_type.category),
            "description": node_type.description,
            "config_schema": node_type.config_schema,
            "branches": list(node_type.branches({})),
            "resumable": node_type.resumable,
            "endpoint_url": node_type.endpoint_url,
            "timeout_ms": node_type.timeout_ms,
        }
        statement = insert(NodeTypeRow).values(id=uuid.uuid4(), tenant_id=tenant_id, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[NodeTypeRow.tenant_id, NodeTypeRow.key], set_={**values, "update_time": func.now()}
        )
        async with self._sessions.begin() as session:
            # One registration per tenant at a time, so concurrent ones cannot both take the last place.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended('node_types:' || :tenant, 0))"),
                {"tenant": str(tenant_id)},
            )
            keys = set((await session.scalars(select(NodeTypeRow.key).where(NodeTypeRow.tenant_id == tenant_id))).all())
            if node_type.key not in keys and len(keys) >= MAX_NODE_TYPES_PER_TENANT:
                raise ResourceExhausted(
                    QUOTA_REASON,
                    f"this tenant already has {len(keys)} node types, the most it may have; delete one first",
                )
            await session.execute(statement)
        return node_type

    async def delete(self, tenant_id: uuid.UUID, key: str) -> bool:
        """Remove the tenant's type `key`; False when the tenant has none by that key."""
        async with self._sessions.begin() as session:
            deleted = await session.execute(
                delete(NodeTypeRow)
                .where(NodeTypeRow.tenant_id == tenant_id, NodeTypeRow.key == key)
                .returning(NodeTypeRow.id)
            )
            return deleted.first() is not None
