"""Flows and their versions (`flows`, `flow_versions`) as the engine reads them; the API owns and writes them.

The engine reads a version's graph (`load_graph`, cached by the runtime), finds the flows an event enters, and
reads a flow's committed status to carry it to the flow's instances (`flow_exists`, `flows_with_instances_in`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import Flow, FlowInstance, FlowVersion, Wait
from kalcifer_common.statuses import FlowStatus, InstanceStatus, WaitStatus
from sqlalchemy import Table, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

_flows = typed(Table, Flow.__table__)
_versions = typed(Table, FlowVersion.__table__)
_instances = typed(Table, FlowInstance.__table__)
_waits = typed(Table, Wait.__table__)


async def load_graph(conn: AsyncConnection, flow_id: uuid.UUID, version_number: int) -> dict[str, Any] | None:
    """The stored graph of one version."""
    query = select(_versions.c.graph).where(
        _versions.c.flow_id == flow_id, _versions.c.version_number == version_number
    )
    graph: dict[str, Any] | None = (await conn.execute(query)).scalar_one_or_none()
    return graph


async def flow_exists(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> bool:
    """Whether the tenant has this flow."""
    found = await conn.execute(select(_flows.c.id).where(_flows.c.id == flow_id, _flows.c.tenant_id == tenant_id))
    return found.first() is not None


async def flows_with_instances_in(
    conn: AsyncConnection, flow_status: str, instance_statuses: Iterable[str], limit: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant id, flow id) of up to `limit` flows in `flow_status` with an instance in one of `instance_statuses`."""
    query = (
        select(_flows.c.tenant_id, _flows.c.id)
        .where(
            _flows.c.status == flow_status,
            # tenant_id too: the (tenant_id, flow_id, status) index answers it without a scan.
            exists().where(
                _instances.c.tenant_id == _flows.c.tenant_id,
                _instances.c.flow_id == _flows.c.id,
                _instances.c.status.in_(list(instance_statuses)),
            ),
        )
        .limit(limit)
    )
    return [(row.tenant_id, row.id) for row in await conn.execute(query)]


async def active_flows_with_held_events(conn: AsyncConnection, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant id, flow id) of up to `limit` ACTIVE flows with a live, unpaused instance whose pending wait still
    keeps an event held while the flow was paused (a ResumeFlowInstances cut off before applying it)."""
    query = (
        select(_instances.c.tenant_id, _instances.c.flow_id)
        .select_from(
            _waits.join(_instances, _instances.c.id == _waits.c.instance_id).join(
                _flows, _flows.c.id == _instances.c.flow_id
            )
        )
        .where(
            _waits.c.status == WaitStatus.PENDING,
            _waits.c.branch_path.has_key("held_event"),
            _flows.c.status == FlowStatus.ACTIVE,
            _instances.c.status != InstanceStatus.PAUSED,
        )
        .distinct()
        .limit(limit)
    )
    return [(row.tenant_id, row.flow_id) for row in await conn.execute(query)]
