"""The analytics counters (`flow_counters`): a transaction's `Tally`, added in one statement just before it commits.

The increments go to one shard of each key, picked at random per transaction, so concurrent transactions of one
flow rarely wait on the same row; the rows are taken in key order, the same in every transaction, and in the
transaction's last statement, so two transactions never deadlock on counters (`domain.tallies`).
"""

from __future__ import annotations

import random

from kalcifer_common.analytics import COUNTER_SHARDS
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import Tally
from kalcifer_engine.repo.connection import driver, json_text

_ROW = (
    "flow_id uuid, node_id text, counter text, day date, version_number int, label text, tenant_id uuid, value numeric"
)

_ADD = f"""
    INSERT INTO flow_counters AS c (flow_id, node_id, counter, day, version_number, label, shard, tenant_id, value)
    SELECT r.flow_id, r.node_id, r.counter, r.day, r.version_number, r.label, $2, r.tenant_id, r.value
    FROM jsonb_to_recordset($1::jsonb) AS r({_ROW})
    ORDER BY r.flow_id, r.node_id, r.counter, r.day, r.version_number, r.label
    ON CONFLICT (flow_id, node_id, counter, day, version_number, label, shard)
    DO UPDATE SET value = c.value + excluded.value
"""  # noqa: S608 - the f-string splices the constant column list above


async def write_tally(conn: AsyncConnection, tally: Tally) -> None:
    """Add the tally's increments to one shard of their counters (nothing to do, no round trip)."""
    rows = [
        {
            "flow_id": key.flow_id,
            "node_id": key.node_id,
            "counter": key.counter,
            "day": key.day,
            "version_number": key.version_number,
            "label": key.label,
            "tenant_id": tenant_id,
            "value": amount,
        }
        for tenant_id, key, amount in tally.rows()
    ]
    if rows:
        shard = random.randrange(COUNTER_SHARDS)  # spreads writers over rows; nothing secret about it
        await (await driver(conn)).execute(_ADD, json_text(rows), shard)
