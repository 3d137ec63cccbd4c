"""MIGRATE_ALL jobs (`flow_migrations`): started once per flow, worked in batches under a lease (SPEC 6.8).

A job is claimed for `lease` seconds by the replica that works a batch; each batch records its counts, the last
instance id it moved (the keyset cursor of the next batch) and renews the lease, so a replica that dies hands the
job to the next one's recovery pass within one lease, and two replicas never move the same batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kalcifer_common.errors import FailedPrecondition
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

# Failures kept per job (their count is kept whole).
MAX_FAILURES_KEPT = 100

_FIELDS = (
    "id, tenant_id, flow_id, from_version_number, to_version_number, status, migrated, exited, skipped, failed, "
    "failures, after_instance_id"
)


@dataclass(frozen=True, slots=True)
class MigrationJob:
    """A job as a batch sees it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    from_version: int
    to_version: int
    running: bool
    migrated: int
    exited: int
    skipped: int
    failed: int
    failures: list[dict[str, str]]
    after_instance_id: uuid.UUID | None


def _job(row: Any) -> MigrationJob:
    return MigrationJob(
        id=row["id"],
        tenant_id=row["tenant_id"],
        flow_id=row["flow_id"],
        from_version=row["from_version_number"],
        to_version=row["to_version_number"],
        running=row["status"] == "running",
        migrated=int(row["migrated"]),
        exited=int(row["exited"]),
        skipped=int(row["skipped"]),
        failed=int(row["failed"]),
        failures=list(row["failures"] or []),
        after_instance_id=row["after_instance_id"],
    )


_START = f"""
    WITH started AS (
        INSERT INTO flow_migrations (tenant_id, flow_id, from_version_number, to_version_number)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (flow_id) WHERE status = 'running' DO NOTHING
        RETURNING {_FIELDS}
    )
    SELECT {_FIELDS} FROM started
    UNION ALL
    SELECT {_FIELDS} FROM flow_migrations WHERE flow_id = $2 AND status = 'running'
    LIMIT 1
"""  # noqa: S608 - constant column list


async def start_or_join(
    conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID, from_version: int, to_version: int
) -> MigrationJob:
    """The flow's running job to `to_version` (started now if there is none); FAILED_PRECONDITION when a job to
    another version is still running."""
    row = await (await driver(conn)).fetchrow(_START, tenant_id, flow_id, from_version, to_version)
    if row is None:  # another call started one that this statement's snapshot cannot see yet
        raise FailedPrecondition("MIGRATION_IN_PROGRESS", "a migration of this flow was just started; retry")
    job = _job(row)
    if job.to_version != to_version or job.from_version != from_version:
        raise FailedPrecondition(
            "MIGRATION_IN_PROGRESS",
            f"a migration of this flow to version {job.to_version} is still moving instances; wait for it "
            "(GetMigrationStatus) and migrate again",
        )
    return job


_CLAIM = f"""
    UPDATE flow_migrations SET lease_until = now() + make_interval(secs => $2), update_time = now()
    WHERE id = $1 AND status = 'running' AND (lease_until IS NULL OR lease_until < now())
    RETURNING {_FIELDS}
"""  # noqa: S608 - constant column list


async def claim(conn: AsyncConnection, job_id: uuid.UUID, lease_seconds: float) -> MigrationJob | None:
    """Take the job's lease if it is running and nobody holds it; None otherwise."""
    row = await (await driver(conn)).fetchrow(_CLAIM, job_id, lease_seconds)
    return None if row is None else _job(row)


_RECORD = """
    UPDATE flow_migrations SET
        migrated = migrated + $2, exited = exited + $3, skipped = skipped + $4, failed = failed + $5,
        failures = (SELECT coalesce(jsonb_agg(f), '[]'::jsonb) FROM (
            SELECT f FROM jsonb_array_elements(failures || $6::jsonb) f LIMIT $7) kept),
        after_instance_id = coalesce($8, after_instance_id),
        status = CASE WHEN $9 THEN 'done' ELSE status END,
        lease_until = CASE WHEN $9 THEN NULL ELSE now() + make_interval(secs => $10) END,
        update_time = now()
    WHERE id = $1
"""


async def record_batch(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    *,
    migrated: int,
    exited: int,
    skipped: int,
    failures: Sequence[tuple[str, str]],
    after_instance_id: uuid.UUID | None,
    done: bool,
    lease_seconds: float,
) -> None:
    """Add one batch's counts, move the cursor, and renew the lease (or end the job)."""
    kept = [{"instance_id": i, "reason": r[:500]} for i, r in failures]
    await (await driver(conn)).execute(
        _RECORD,
        job_id,
        migrated,
        exited,
        skipped,
        len(failures),
        json_text(kept),
        MAX_FAILURES_KEPT,
        after_instance_id,
        done,
        lease_seconds,
    )


async def release(conn: AsyncConnection, job_id: uuid.UUID) -> None:
    """Give the lease up (the next recovery pass of any replica goes on)."""
    await (await driver(conn)).execute("UPDATE flow_migrations SET lease_until = NULL WHERE id = $1", job_id)


async def read(conn: AsyncConnection, job_id: uuid.UUID) -> MigrationJob:
    """The job as it is now."""
    row = await (await driver(conn)).fetchrow(f"SELECT {_FIELDS} FROM flow_migrations WHERE id = $1", job_id)  # noqa: S608
    return _job(row)


async def orphaned(conn: AsyncConnection, limit: int) -> list[uuid.UUID]:
    """Running jobs nobody holds (their replica stopped, or gave the lease up)."""
    rows = await (await driver(conn)).fetch(
        "SELECT id FROM flow_migrations WHERE status = 'running' AND (lease_until IS NULL OR lease_until < now()) "
        "ORDER BY update_time LIMIT $1",
        limit,
    )
    return [row["id"] for row in rows]
