"""Deliveries (`deliveries`): the sends action nodes create in the run's transaction; the scheduler sends them.

A delivery is keyed so that a re-run of the same step after a crash makes no second one (`insert_delivery`);
frequency caps count them (`count_deliveries`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import Delivery
from kalcifer_common.statuses import DeliveryStatus
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_deliveries = typed(Table, Delivery.__table__)

_INSERT_DELIVERY = """
    WITH k AS (
        SELECT $9 || ':v' || (count(*) + 1)::text AS key FROM deliveries WHERE instance_id = $3 AND node_id = $4
    ), ins AS (
        INSERT INTO deliveries (id, tenant_id, instance_id, node_id, participant_id, channel, template_id, payload,
                                idempotency_key, create_time, update_time, send_after)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb, k.key, $10, $10, $11 FROM k
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT id FROM ins) AS id, (SELECT key FROM k) AS key
"""


async def insert_delivery(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID,
    node_id: str,
    participant_id: str,
    channel: str,
    template_id: str | None,
    payload: Mapping[str, Any],
    key_prefix: str,
    now: datetime,
    send_after: datetime | None = None,
) -> tuple[uuid.UUID | None, str]:
    """A pending delivery keyed `key_prefix:v<visit>`, not sent before `send_after` (quiet hours); returns (its
    id, or None if the key existed; the key).

    The visit number (how many deliveries this node already made for this instance, plus one) tells apart two
    arrivals at the same node (a join), while a re-run of the same step after a crash sees the same committed
    count and so the same key: `ON CONFLICT DO NOTHING` then makes no second delivery.
    """
    row = await (await driver(conn)).fetchrow(
        _INSERT_DELIVERY,
        uuid.uuid4(),
        tenant_id,
        instance_id,
        node_id,
        participant_id,
        channel,
        template_id,
        json_text(dict(payload)),
        key_prefix,
        now,
        send_after,
    )
    return row["id"], str(row["key"])


# Sends to one participant are counted and made one transaction at a time (a transaction-scoped advisory lock
# on tenant and participant), so two flows sending at once cannot both see room under a cap and both send.
_LOCK_RECIPIENT = "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2, 0))"


async def count_deliveries(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, channel: str, since: datetime
) -> int:
    """Messages sent or scheduled (every delivery but failed ones) to a participant on a channel ("any" = all
    channels) created at or after `since`, in every flow of the tenant. Takes the participant's send lock for the
    rest of the transaction first (see `_LOCK_RECIPIENT`)."""
    await (await driver(conn)).execute(_LOCK_RECIPIENT, str(tenant_id), participant_id)
    query = (
        select(func.count())
        .select_from(_deliveries)
        .where(
            _deliveries.c.tenant_id == tenant_id,
            _deliveries.c.participant_id == participant_id,
            _deliveries.c.create_time >= since,
            _deliveries.c.status != DeliveryStatus.FAILED,
        )
    )
    if channel != "any":
        query = query.where(_deliveries.c.channel == channel)
    return int((await conn.execute(query)).scalar_one())
