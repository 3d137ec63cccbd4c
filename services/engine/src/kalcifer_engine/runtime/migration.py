"""Moving live instances between versions of a flow (SPEC 6.8 MigrateInstances).

MIGRATE_ALL is a durable job (`repo.migrations`) worked in bounded batches, in keyset order of instance id, by
whichever replica holds its lease: the call that starts it works it for at most `MIGRATION_CALL_SECONDS`, the
rest goes on in the background, and recovery takes up a job whose replica died. It moves each live instance, one
transaction each under its row lock: an instance whose waiting node is gone from the new version exits with
`node_removed_in_new_version`; a wait whose node's config (or type) changed
is re-armed by executing the node of the new version as of the moment the path originally reached it (so a
`wait` of 1h changed to 2h fires 2h after arrival, not 2h after the migration). NEW_ENTRIES_ONLY moves nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.graph import FlowGraph
from kalcifer_engine.nodes.base import Waiting
from kalcifer_engine.repo import flows, instances, migrations
from kalcifer_engine.repo.customers import has_converted
from kalcifer_engine.repo.waits import pending_waits, rearm_wait
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.db_context import DbNodeContext, RunScope
from kalcifer_engine.runtime.replay import Replay
from kalcifer_engine.runtime.run import Effects, exit_instance

NODE_REMOVED = "node_removed_in_new_version"
NEW_ENTRIES_ONLY = "new_entries_only"
MIGRATE_ALL = "migrate_all"

_R = TypeVar("_R", bound=Message)


@dataclass
class MigrationReport:
    """Counts of MigrateInstances (so far, when `in_progress`)."""

    migrated: int = 0
    exited: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    in_progress: bool = False


async def migrate_instances(
    rt: Runtime,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    from_version: int,
    to_version: int,
    strategy: str,
) -> MigrationReport:
    """Move (or count) the flow's live instances not on `to_version` (only those on `from_version` if given).

    MIGRATE_ALL starts (or joins) the flow's migration job and works it for at most `MIGRATION_CALL_SECONDS`;
    what is left is worked in the background, batch by batch (`work_migration`), and the answer says
    `in_progress`.
    """
    if strategy not in (NEW_ENTRIES_ONLY, MIGRATE_ALL):
        raise InvalidArgument.single("strategy", "must be NEW_ENTRIES_ONLY or MIGRATE_ALL")
    if from_version == to_version:
        raise FailedPrecondition("SAME_VERSION", f"instances are already on version {to_version}")
    async with rt.db.connect() as conn:
        if not await flows.flow_exists(conn, tenant_id, flow_id):
            raise NotFound("flow", f"flows/{flow_id}")
        await rt.graph(conn, flow_id, to_version)  # NOT_FOUND for a version that does not exist
        if strategy == NEW_ENTRIES_ONLY:
            left = await instances.count_live_instances(
                conn, tenant_id, flow_id, not_on_version=to_version, on_version=from_version
            )
            return MigrationReport(skipped=left)
    async with rt.db.begin() as conn:
        job = await migrations.start_or_join(conn, tenant_id, flow_id, from_version, to_version)
    await work_migration(rt, job.id, budget_seconds=rt.settings.migration_call_seconds)
    async with rt.db.connect() as conn:
        job = await migrations.read(conn, job.id)
    if job.running:
        rt.spawn(work_migration(rt, job.id, budget_seconds=None), name=f"migration:{job.id}")
    return MigrationReport(
        migrated=job.migrated,
        exited=job.exited,
        skipped=job.skipped,
        failures=[(f.get("instance_id", ""), f.get("reason", "")) for f in job.failures],
        in_progress=job.running,
    )


async def work_migration(rt: Runtime, job_id: uuid.UUID, *, budget_seconds: float | None) -> bool:
    """Move the job's instances batch by batch (each instance in its own transaction) while this replica holds
    the job's lease, for at most `budget_seconds` (None: to the end); True when the job is done."""
    lease = rt.settings.migration_lease_seconds
    async with rt.db.begin() as conn:
        job = await migrations.claim(conn, job_id, lease)
    if job is None:
        return False  # done, or another replica is on it
    loop = asyncio.get_running_loop()
    give_up_at = None if budget_seconds is None else loop.time() + budget_seconds
    after = job.after_instance_id
    while True:
        async with rt.db.connect() as conn:
            new_graph = await rt.graph(conn, job.flow_id, job.to_version)
            ids = await instances.live_instance_ids(
                conn,
                job.tenant_id,
                job.flow_id,
                not_on_version=job.to_version,
                on_version=job.from_version,
                after=after,
                limit=rt.settings.migration_batch_size,
            )
        report = MigrationReport()
        for instance_id in ids:
            await _migrate_counted(rt, instance_id, job.to_version, new_graph, report)
        after = ids[-1] if ids else after
        done = len(ids) < rt.settings.migration_batch_size
        async with rt.db.begin() as conn:
            await migrations.record_batch(
                conn,
                job.id,
                migrated=report.migrated,
                exited=report.exited,
                skipped=report.skipped,
                failures=report.failures,
                after_instance_id=after,
                done=done,
                lease_seconds=lease,
            )
        if done:
            return True
        if give_up_at is not None and loop.time() >= give_up_at:
            async with rt.db.begin() as conn:
                await migrations.release(conn, job.id)
            return False


async def _migrate_counted(
    rt: Runtime, instance_id: uuid.UUID, to_version: int, new_graph: FlowGraph, report: MigrationReport
) -> None:
    effects = Effects()
    try:
        async with rt.transaction(effects) as conn:
            outcome = await _migrate_one(rt, conn, instance_id, to_version, new_graph, effects)
    except (ValueError, NotFound) as error:
        report.failures.append((str(instance_id), str(error)))
        return
    await rt.after_commit(effects)
    if outcome == "migrated":
        report.migrated += 1
    elif outcome == "exited":
        report.exited += 1
    else:
        report.skipped += 1


async def continue_migrations(rt: Runtime) -> int:
    """Recovery: take up the running migrations nobody works on (their replica stopped); returns how many."""
    async with rt.db.connect() as conn:
        orphans = await migrations.orphaned(conn, limit=10)
    for job_id in orphans:
        rt.spawn(work_migration(rt, job_id, budget_seconds=None), name=f"migration:{job_id}")
    return len(orphans)


async def migrate_instances_once(
    rt: Runtime,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    from_version: int,
    to_version: int,
    strategy: str,
    replay: Replay[_R],
    answer: Callable[[MigrationReport], _R],
) -> _R:
    """MigrateInstances: `migrate_instances`, answered `answer(report)` and remembered for the call's `request_id`."""
    scope = str(tenant_id)
    # Instances move in transactions of their own, so the answer is remembered after the last one; a retry
    # with the same request_id replays it (a concurrent twin finds little left to move and then replays too).
    async with rt.db.connect() as conn:
        stored = await replay.stored(conn, scope)
    if stored is not None:
        return stored
    report = await migrate_instances(
        rt, tenant_id, flow_id, from_version=from_version, to_version=to_version, strategy=strategy
    )
    response = answer(report)

    async def computed() -> _R:
        return response

    async with rt.db.begin() as conn:
        return await replay.once(conn, scope, computed)


async def _migrate_one(
    rt: Runtime, conn: AsyncConnection, instance_id: uuid.UUID, to_version: int, new_graph: FlowGraph, effects: Effects
) -> str:
    now = rt.now()
    instance = await instances.lock_instance(conn, instance_id)
    if instance is None or not instance.live or instance.version_number == to_version:
        return "skipped"
    old_graph = await rt.graph(conn, instance.flow_id, instance.version_number)
    waits = await pending_waits(conn, instance_id)
    nodes = {w.node_id for w in waits} | set(instance.current_nodes)
    if any(new_graph.node(node_id) is None for node_id in nodes):
        await exit_instance(conn, instance, NODE_REMOVED, effects, now=now)
        return "exited"
    registry = await rt.registry(conn, instance.tenant_id)
    for wait in waits:
        old_node, new_node = old_graph.node(wait.node_id), new_graph.node(wait.node_id)
        assert new_node is not None
        if wait.meta.get("retry_attempt") or (
            old_node is not None and old_node.type == new_node.type and dict(old_node.config) == dict(new_node.config)
        ):
            continue
        node_type = registry.get(new_node.type)
        if node_type is None:
            raise ValueError(f"node {new_node.id!r} has unknown type {new_node.type!r} in version {to_version}")
        reached = _reached_time(wait.meta, now)
        scope = RunScope.of(conn, instance, reached, rt.expressions)
        try:
            result = await node_type.execute(new_node.config, DbNodeContext(scope, new_node.id, 1))
        except NotImplementedError as error:
            raise ValueError(f"cannot re-arm node {new_node.id!r}: {error}") from error
        if not isinstance(result, Waiting):
            raise ValueError(f"node {new_node.id!r} no longer waits in version {to_version}")
        await rearm_wait(
            conn,
            wait.id,
            kind=result.kind,
            fire_time=result.fire_time,
            event_type=result.event_type,
            event_filter=result.event_filter,
            meta={**wait.meta, "rearmed_for": to_version},
        )
        if wait.fire_time is not None:
            effects.cancelled_timers.append((wait.id, wait.fire_time))
        if result.fire_time is not None:
            effects.timers.append((instance.id, wait.id, result.fire_time))
    await instances.move_to_version(conn, instance_id, to_version, now)
    converted = await has_converted(conn, instance_id)
    effects.tally.version_changed(instance.cohort(now), to_version, status=instance.status, converted=converted)
    return "migrated"


def _reached_time(meta: dict[str, Any], default: datetime) -> datetime:
    value = meta.get("reached_time")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return default
    return default
