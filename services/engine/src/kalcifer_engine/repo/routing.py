"""What routing one event needs from the database, in one round trip (`claim_for_routing`).

Routing an event (SPEC 6.6) claims its row and then reads three things: the live journeys whose goals or exit
criteria name its type, the participant's pending waits for it, and the active flows with an `event_entry` for
it. One statement does all four: the claim is a data-modifying CTE and the reads happen only when it claimed the
row. Each read keeps its order (the instance order of the waits is the lock order of every batch).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text
from kalcifer_engine.repo.journeys import ListeningJourney, listening_journey
from kalcifer_engine.repo.waits import WaitRow, wait_record

# $1 event id, $2 tenant id, $3 now, $4 participant id, $5 event type, $6 the event_entry shape (JSONB containment).
# Every part has the same columns (NULL where they do not apply) and its own order in `ord`.
_CLAIM_AND_READ = """
    WITH claimed AS (
        UPDATE events SET routed_time = $3 WHERE id = $1 AND tenant_id = $2 AND routed_time IS NULL RETURNING id
    )
    SELECT 'claimed' AS part, 0::bigint AS ord, NULL::uuid AS id, NULL::uuid AS flow_id,
           NULL::jsonb AS exit_criteria, NULL::jsonb AS goals, NULL::int AS active_version_number,
           NULL::uuid AS instance_id, NULL::text AS node_id, NULL::text AS kind, NULL::text AS status,
           NULL::timestamptz AS fire_time, NULL::text AS event_type, NULL::text AS event_filter,
           NULL::jsonb AS branch_path
    FROM claimed
    UNION ALL
    -- journeys whose exit criteria or goals name this event type (a tenant has few journeys; containment on each)
    SELECT 'journey', row_number() OVER (ORDER BY j.id), j.id, j.flow_id, j.exit_criteria, j.goals,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM journeys j
    WHERE EXISTS (SELECT 1 FROM claimed) AND j.tenant_id = $2 AND j.status IN ('active', 'paused')
      AND (j.exit_criteria @> jsonb_build_array(jsonb_build_object('event_type', $5::text))
           OR j.goals @> jsonb_build_array(jsonb_build_object('event_type', $5::text)))
    UNION ALL
    SELECT 'wait', row_number() OVER (ORDER BY w.instance_id, w.create_time, w.id), w.id, NULL, NULL, NULL, NULL,
           w.instance_id, w.node_id, w.kind, w.status, w.fire_time, w.event_type, w.event_filter, w.branch_path
    FROM waits w
    WHERE EXISTS (SELECT 1 FROM claimed) AND w.tenant_id = $2 AND w.participant_id = $4 AND w.event_type = $5
      AND w.status = 'pending' AND w.kind = 'event'
    UNION ALL
    SELECT 'flow', row_number() OVER (ORDER BY f.id), f.id, NULL, NULL, NULL, f.active_version_number,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE EXISTS (SELECT 1 FROM claimed) AND f.tenant_id = $2 AND f.status = 'active' AND v.graph @> $6::jsonb
    ORDER BY part, ord
"""

EVENT_ENTRY = "event_entry"


@dataclass
class Claimed:
    """An event claimed for routing in this transaction, and what it routes to."""

    journeys: list[ListeningJourney] = field(default_factory=list)
    waits: list[WaitRow] = field(default_factory=list)
    # (flow id, active version) of the active flows with an event_entry for the event's type, in id order
    entry_flows: list[tuple[uuid.UUID, int]] = field(default_factory=list)


async def claim_for_routing(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    event_id: uuid.UUID,
    participant_id: str,
    event_type: str,
    now: datetime,
) -> Claimed | None:
    """Mark the stored event routed (in this transaction) and read what it routes to; None when it is routed
    already or not stored (nothing written)."""
    shape = {"nodes": [{"type": EVENT_ENTRY, "config": {"event_type": event_type}}]}
    rows = await (await driver(conn)).fetch(
        _CLAIM_AND_READ, event_id, tenant_id, now, participant_id, event_type, json_text(shape)
    )
    if not rows or rows[0]["part"] != "claimed":
        return None
    claimed = Claimed()
    for row in rows[1:]:
        part: Any = row["part"]
        if part == "journey":
            claimed.journeys.append(listening_journey(row, event_type))
        elif part == "wait":
            claimed.waits.append(wait_record(row))
        else:
            claimed.entry_flows.append((row["id"], row["active_version_number"]))
    return claimed
