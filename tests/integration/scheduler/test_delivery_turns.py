"""Tenants take turns on the deliveries queue (SPEC 10): one tenant's backlog never holds another's sends back.

Two send workers, at most 4 deliveries of a tenant queued at once, and a webhook that takes 50 ms a send: tenant A
queues 200 deliveries (40 s of sending one by one, 5 s with both workers), then tenant B one. B's send must go out
behind at most A's queued turns, not behind A's backlog, and every one of A's still goes out exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from kalcifer.scheduler.v1 import scheduler_pb2
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import SchedulerProcess, Seeder, scheduler_stub, store_provider
from tests.support.endpoint import Endpoint, Reply, running_endpoint
from tests.support.eventually import eventually
from tests.support.rpc import bearer

PER_TENANT = 4
BACKLOG = 200


@pytest.fixture(scope="module")
def env(env: dict[str, str]) -> dict[str, str]:
    """The module's schedulers: two send workers, a few deliveries of a tenant queued at once."""
    return env | {"DELIVERIES_CONCURRENCY": "2", "DELIVERIES_QUEUED_PER_TENANT": str(PER_TENANT)}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    """Both tenants' webhook provider: 50 ms a send."""
    with running_endpoint() as running:
        running.script(default=Reply(200, {}, delay=0.05))
        yield running


async def _pending(db: AsyncEngine, tenant: uuid.UUID, count: int) -> list[str]:
    """`count` pending webhook deliveries of the tenant, oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    async with db.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO deliveries (id, tenant_id, node_id, participant_id, channel, payload, status,
                    idempotency_key, create_time)
                VALUES (:id, :tenant, 'send', 'p', 'webhook', CAST(:payload AS jsonb), 'pending', :key,
                    clock_timestamp())
                """
            ),
            [{"id": i, "tenant": tenant, "payload": json.dumps({"subject": "hi"}), "key": f"turns-{i}"} for i in ids],
        )
    return [str(i) for i in ids]


async def test_a_tenants_send_waits_behind_anothers_turns_not_its_backlog(
    channel: grpc.aio.Channel,
    token: str,
    sched_db: AsyncEngine,
    seeder: Seeder,
    scheduler: SchedulerProcess,
    endpoint: Endpoint,
    sched_redis_url: str,
) -> None:
    neighbour = Seeder(sched_db)
    await neighbour.setup()
    for tenant, path in ((seeder.tenant_id, "/a"), (neighbour.tenant_id, "/b")):
        await store_provider(sched_db, tenant, "webhook", "webhook", {"url": endpoint.url(path)}, {"secret": "s" * 20})
    stub = scheduler_stub(channel)

    backlog = await _pending(sched_db, seeder.tenant_id, BACKLOG)
    queued = await stub.EnqueueDeliveries(
        scheduler_pb2.EnqueueDeliveriesRequest(delivery_ids=backlog), metadata=bearer(token)
    )
    assert queued.enqueued <= PER_TENANT  # A's turns, not its backlog
    await eventually(lambda: endpoint.paths().count("/a"), until=lambda n: n >= 10, what="A's sends under way")

    a_before = endpoint.paths().count("/a")
    [b] = await _pending(sched_db, neighbour.tenant_id, 1)
    answer = await stub.EnqueueDeliveries(
        scheduler_pb2.EnqueueDeliveriesRequest(delivery_ids=[b]), metadata=bearer(token)
    )
    assert answer.enqueued in (0, 1)  # 0 when a pass that one of A's sends woke queued it first
    paths = await eventually(endpoint.paths, until=lambda seen: "/b" in seen, within=30, what="B's delivery sent")
    a_ahead_of_b = paths[: paths.index("/b")].count("/a") - a_before
    # Behind A's queued turns and the sends already taken, give or take a refill racing B's enqueue.
    assert a_ahead_of_b <= PER_TENANT + 4, a_ahead_of_b
    assert paths.count("/a") < BACKLOG / 2  # under a FIFO, B's send would have waited for all 200

    async def statuses() -> dict[str, Any]:
        async with sched_db.connect() as connection:
            rows = await connection.execute(
                text("SELECT status, count(*) FROM deliveries WHERE tenant_id = :t GROUP BY status"),
                {"t": seeder.tenant_id},
            )
            counts: dict[str, Any] = {status: count for status, count in rows.all()}
            if counts == {"sent": BACKLOG}:
                return counts
            # What a failure message needs to tell why some are left: their oldest rows, and their queued jobs.
            unsent = await connection.execute(
                text(
                    "SELECT id, status, attempts, send_after, update_time FROM deliveries"
                    " WHERE tenant_id = :t AND status <> 'sent' ORDER BY create_time LIMIT 5"
                ),
                {"t": seeder.tenant_id},
            )
            oldest = unsent.all()
        redis = Redis.from_url(sched_redis_url)
        try:
            queued = await redis.zrange("deliveries", 0, -1)
            jobs = [await redis.exists(f"arq:job:delivery:{row.id}:{row.attempts}") for row in oldest]
        finally:
            await redis.aclose()
        return counts | {"oldest_unsent": [tuple(row) for row in oldest], "their_jobs": jobs, "queue": len(queued)}

    await eventually(
        statuses, until=lambda seen: seen == {"sent": BACKLOG}, within=120, what="every one of A's deliveries sent"
    )
    keys = [request.headers["idempotency-key"] for request in endpoint.requests_to("/a")]
    assert sorted(keys) == sorted(f"turns-{i}" for i in backlog)  # each once
