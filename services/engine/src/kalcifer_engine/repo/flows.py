"""Flows and their versions (`flows`, `flow_versions`) as the engine reads them; the API owns and writes them.

The engine reads a version's graph (`load_graph`, cached by the runtime), finds the flows an event enters, and
reads a flow's committed status to carry it to the flow's instances.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import FlowVersion
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_versions = typed(Table, FlowVersion.__table__)


async def load_graph(conn: AsyncConnection, flow_id: uuid.UUID, version_number: int) -> dict[str, Any] | None:
    """The stored graph of one version."""
    query = select(_versions.c.graph).where(
        _versions.c.flow_id == flow_id, _versions.c.version_number == version_number
    )
    graph: dict[str, Any] | None = (await conn.execute(query)).scalar_one_or_none()
    return graph


_ENTRY_FLOWS = """
    SELECT f.id, f.active_version_number FROM flows f
    JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE f.tenant_id = $1 AND f.status = 'active' AND v.graph @> $2::jsonb
    ORDER BY f.id
"""


async def flows_with_entry(
    conn: AsyncConnection, tenant_id: uuid.UUID, shape: Mapping[str, Any]
) -> list[tuple[uuid.UUID, int]]:
    """Active flows of the tenant whose active graph contains `shape` (JSONB containment), in id order."""
    rows = await (await driver(conn)).fetch(_ENTRY_FLOWS, tenant_id, json_text(dict(shape)))
    return [(row["id"], row["active_version_number"]) for row in rows]
