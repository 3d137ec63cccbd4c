"""The PostgreSQL side of timers: claiming due wait rows so that exactly one replica fires each one.

The wait row is the truth, and the engine alone writes it. A claim is a lease in the scheduler's own table,
`wait_claims` (wait id -> claim_until), taken in one statement: `INSERT .. ON CONFLICT DO UPDATE .. WHERE the
old lease expired`, which serializes replicas on the claim row, so the bucket jobs and the sweeps of any number
of replicas never hand the same wait to the engine twice; a claim whose replica died expires and the sweep takes
the wait again. Waits of paused instances are never claimed: the engine applies them itself on ResumeFlow
(SPEC 6.8). Claims of waits that are no longer pending are deleted by maintenance, the rest with their wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kalcifer_common.statuses import WaitKind
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

# Which EngineService trigger a due wait fires with: a timer elapsed, or a wait_for_event gave up waiting.
TRIGGER_OF_KIND: dict[str, str] = {WaitKind.TIMER: "timer", WaitKind.EVENT: "timeout"}

_ID_ARRAY = ARRAY(Uuid())

# The due waits (a CTE; not of paused instances or flows: the engine would only hold them), then one claim per
# wait that has no live lease; only the waits whose claim this statement wrote are returned. A concurrent claimer
# of the same wait blocks on the claim row's unique key, then finds the lease live and takes nothing. Claims are
# written in wait-id order by every statement, so two claimers of overlapping sets cannot deadlock.
_CLAIM = """
    WITH due AS (
        SELECT w.id, w.instance_id, w.kind, w.fire_time, greatest(w.fire_time, w.create_time) AS due_time
        FROM waits w JOIN flow_instances i ON i.id = w.instance_id JOIN flows f ON f.id = i.flow_id
        WHERE {due} AND w.status = 'pending' AND w.fire_time IS NOT NULL AND i.status <> 'paused'
            AND f.status <> 'paused'
            AND NOT EXISTS (SELECT 1 FROM wait_claims c WHERE c.wait_id = w.id AND c.claim_until >= now())
        {order}
    ), claimed AS (
        INSERT INTO wait_claims (wait_id, claim_until)
        SELECT id, now() + make_interval(secs => :lease) FROM due ORDER BY id
        ON CONFLICT (wait_id) DO UPDATE SET claim_until = excluded.claim_until
            WHERE wait_claims.claim_until < now()
        RETURNING wait_id, claim_until
    )
    SELECT due.id, due.instance_id, due.kind, due.fire_time, due.due_time, claimed.claim_until
    FROM due JOIN claimed ON claimed.wait_id = due.id
"""

_CLAIM_BY_IDS = text(_CLAIM.format(due="w.id = ANY(:ids) AND w.fire_time <= now()", order="")).bindparams(
    bindparam("ids", type_=_ID_ARRAY)
)

_NOT_YET_DUE = text(
    "SELECT id, fire_time FROM waits WHERE id = ANY(:ids) AND status = 'pending' AND fire_time > now()"
).bindparams(bindparam("ids", type_=_ID_ARRAY))

# Ordered by fire time on ix_waits_pending_fire_time and bounded, so a sweep costs the same at a million waits.
_CLAIM_OVERDUE = text(
    _CLAIM.format(due="w.fire_time <= now() - make_interval(secs => :grace)", order="ORDER BY w.fire_time LIMIT :limit")
)

# A call wait's claim, taken over by the call that is about to be made: extended to cover the call's deadline
# (from its spec) plus the usual lease, only if it is still the claim this replica took (`token`); with the spec.
_RENEW_CALL = text(
    """
    WITH spec AS (
        SELECT w.id, w.branch_path -> 'call' AS call FROM waits w
        WHERE w.id = :id AND w.status = 'pending' AND w.kind = 'call'
    ), renewed AS (
        UPDATE wait_claims c
        SET claim_until = now() + make_interval(
            secs => :lease + coalesce((SELECT (spec.call ->> 'deadline_seconds')::float8 FROM spec), 30))
        WHERE c.wait_id = :id AND c.claim_until = :token AND EXISTS (SELECT 1 FROM spec)
        RETURNING c.claim_until
    )
    SELECT renewed.claim_until, spec.call FROM renewed, spec
    """
)

_RELEASE = text("DELETE FROM wait_claims WHERE wait_id = ANY(:ids)").bindparams(bindparam("ids", type_=_ID_ARRAY))

_WITHIN_HORIZON = text(
    """
    SELECT id, fire_time FROM waits
    WHERE status = 'pending' AND fire_time IS NOT NULL AND fire_time > :after AND fire_time <= :until
    ORDER BY fire_time
    LIMIT :limit
    """
)


@dataclass(frozen=True, slots=True)
class DueWait:
    """A claimed wait, ready to resume."""

    wait_id: str
    instance_id: str
    kind: str
    fire_time: datetime
    # When the wait became due for the scheduler: its fire time, or when it was created if that is later (a
    # `wait_until` already in the past is due at once, not years late). Lateness is measured from here.
    due_time: datetime
    # The end of this replica's lease on it: also the token that says the claim is still ours.
    claim_until: datetime | None = None

    @property
    def trigger(self) -> str:
        """The EngineService trigger: "timer", or "timeout" for a wait_for_event's deadline (call waits are resumed
        by their call, `outbound.calls`, never by this)."""
        return TRIGGER_OF_KIND.get(self.kind, "timer")


@dataclass(frozen=True, slots=True)
class PendingWait:
    """A pending wait's id and fire time (for arming)."""

    wait_id: str
    fire_time: datetime


class WaitClaims:
    """Claims, releases and reads wait rows for the timer paths."""

    def __init__(self, db: AsyncEngine, *, lease_seconds: float) -> None:
        self._db = db
        self._lease = lease_seconds

    async def claim(self, wait_ids: Sequence[str]) -> tuple[list[DueWait], list[PendingWait]]:
        """Claim the given waits that are due now; also return those that are pending but not due yet."""
        ids = _uuids(wait_ids)
        if not ids:
            return [], []
        async with self._db.begin() as connection:
            rows = (await connection.execute(_CLAIM_BY_IDS, {"ids": ids, "lease": self._lease})).all()
            not_due: Sequence[Any] = []
            if len(rows) < len(ids):
                not_due = (await connection.execute(_NOT_YET_DUE, {"ids": ids})).all()
        return _due(rows), [PendingWait(str(row.id), row.fire_time) for row in not_due]

    async def claim_overdue(self, *, limit: int, grace_seconds: float) -> list[DueWait]:
        """Claim up to `limit` waits overdue by more than `grace_seconds`, earliest first."""
        async with self._db.begin() as connection:
            rows = (
                await connection.execute(_CLAIM_OVERDUE, {"limit": limit, "grace": grace_seconds, "lease": self._lease})
            ).all()
        return _due(rows)

    async def take_call(self, wait: DueWait) -> tuple[datetime, object] | None:
        """Extend the claim of call wait `wait` over its call (deadline + lease) and read the call's spec; None
        when the claim is no longer this replica's (expired and taken) or the wait is no longer pending."""
        async with self._db.begin() as connection:
            row = (
                await connection.execute(
                    _RENEW_CALL, {"id": uuid.UUID(wait.wait_id), "token": wait.claim_until, "lease": self._lease}
                )
            ).first()
        return None if row is None else (row.claim_until, row.call)

    async def release(self, wait_ids: Sequence[str]) -> None:
        """Drop the claims of waits that could not be fired, so the next sweep retries them."""
        if wait_ids:
            async with self._db.begin() as connection:
                await connection.execute(_RELEASE, {"ids": _uuids(wait_ids)})

    async def pending_between(self, after: datetime, until: datetime, *, limit: int) -> list[PendingWait]:
        """Pending waits with a fire time in (after, until], earliest first, at most `limit`."""
        async with self._db.connect() as connection:
            rows = (await connection.execute(_WITHIN_HORIZON, {"after": after, "until": until, "limit": limit})).all()
        return [PendingWait(str(row.id), row.fire_time) for row in rows]


def _due(rows: Sequence[object]) -> list[DueWait]:
    waits = [
        DueWait(str(r.id), str(r.instance_id), r.kind, r.fire_time, r.due_time, r.claim_until)  # type: ignore[attr-defined]
        for r in rows
    ]
    waits.sort(key=lambda wait: wait.fire_time)
    return waits


def _uuids(values: Sequence[str]) -> list[uuid.UUID]:
    parsed = []
    for value in values:
        try:
            parsed.append(uuid.UUID(value))
        except ValueError:
            continue  # not a wait id of ours (e.g. a stray member): nothing to claim
    return parsed
