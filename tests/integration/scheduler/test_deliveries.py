"""The deliveries queue on real PostgreSQL and Redis: sent once, retried with backoff, never sent twice."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from kalcifer.scheduler.v1 import scheduler_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import (
    SchedulerProcess,
    Seeder,
    forget_provider,
    scheduler_stub,
    store_provider,
    utc_now,
)
from tests.support.endpoint import Endpoint, Reply, running_endpoint
from tests.support.eventually import eventually
from tests.support.rpc import bearer


@pytest.fixture(scope="module")
def webhook() -> Iterator[Endpoint]:
    """The tenant's webhook endpoint: 200 unless a test scripts other answers."""
    with running_endpoint() as endpoint:
        yield endpoint


async def _delivery(
    db: AsyncEngine, tenant: uuid.UUID, channel: str = "email", payload: dict[str, Any] | None = None, **columns: Any
) -> tuple[str, str]:
    """A pending delivery without a template (its payload's subject and text go as they are)."""
    delivery_id, key = uuid.uuid4(), f"idem-{uuid.uuid4()}"
    values = {"status": "pending", "attempts": 0, "send_after": None, "template_id": None} | columns
    values["payload"] = json.dumps(payload or {"subject": "hi"})
    async with db.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO deliveries (id, tenant_id, node_id, participant_id, channel, template_id, payload,
                    status, idempotency_key, attempts, send_after, update_time)
                VALUES (:id, :tenant, 'send_1', 'p-1', :channel, :template_id, CAST(:payload AS jsonb), :status, :key,
                    :attempts, :send_after, coalesce(:update_time, now()))
                """
            ),
            {"id": delivery_id, "tenant": tenant, "channel": channel, "key": key, "update_time": None} | values,
        )
    return str(delivery_id), key


SECRET = "s3cret-s3cret-s3cret"


async def _row(db: AsyncEngine, delivery_id: str) -> Any:
    async with db.connect() as connection:
        return (await connection.execute(text("SELECT * FROM deliveries WHERE id = :id"), {"id": delivery_id})).one()


async def _reaches(db: AsyncEngine, delivery_id: str, status: str, within: float) -> Any:
    """The delivery's row once it has `status`."""
    return await eventually(
        lambda: _row(db, delivery_id),
        until=lambda row: row.status == status,
        within=within,
        interval=0.1,
        what=f"delivery {delivery_id} {status}",
    )


async def _delivery_sweeps_ran(db: AsyncEngine, tenant: uuid.UUID, sweeps: int = 2) -> None:
    """Wait for proof that `sweeps` delivery sweeps ran (and their jobs were worked) from now on: what a test waits
    for before asserting that something was *not* sent. A pending delivery nobody enqueued is sent only after a
    sweep enqueued it; one is written at a time, each once the last was sent."""
    for _ in range(sweeps):
        control, _ = await _delivery(db, tenant, channel="sms")
        await _reaches(db, control, "sent", within=5)


async def test_a_pending_delivery_is_sent_once_through_the_log_provider(
    channel: grpc.aio.Channel, token: str, sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    delivery_id, key = await _delivery(sched_db, seeder.tenant_id)
    stub = scheduler_stub(channel)
    request = scheduler_pb2.EnqueueDeliveriesRequest(delivery_ids=[delivery_id])
    # 1, or 0 when the delivery sweep (every 0.5 s here) queued the new row a moment before this call did.
    assert (await stub.EnqueueDeliveries(request, metadata=bearer(token))).enqueued in (0, 1)

    await _reaches(sched_db, delivery_id, "sent", within=5)
    await stub.EnqueueDeliveries(request, metadata=bearer(token))  # a late duplicate request
    await _delivery_sweeps_ran(sched_db, seeder.tenant_id)  # and a delivery sweep or two
    row = await _row(sched_db, delivery_id)
    assert (row.status, row.attempts, row.provider) == ("sent", 1, "log")
    assert row.provider_message_id.startswith("log-")
    assert row.sent_time is not None
    sent_lines = [line for line in scheduler.log().splitlines() if "delivery sent" in line and key in line]
    assert len(sent_lines) == 1


async def test_the_sweep_sends_deliveries_nobody_enqueued_and_waits_for_send_after(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    now_id, _ = await _delivery(sched_db, seeder.tenant_id, channel="sms")
    later_id, _ = await _delivery(
        sched_db, seeder.tenant_id, channel="sms", send_after=utc_now() + timedelta(seconds=2)
    )

    await _reaches(sched_db, now_id, "sent", within=4)
    assert (await _row(sched_db, later_id)).status == "pending"
    await _reaches(sched_db, later_id, "sent", within=5)
    assert (await _row(sched_db, later_id)).sent_time >= (await _row(sched_db, later_id)).send_after


async def test_a_webhook_send_is_retried_with_backoff_and_carries_key_and_a_timestamped_signature(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess, webhook: Endpoint
) -> None:
    await store_provider(
        sched_db, seeder.tenant_id, "webhook", "webhook", {"url": webhook.url("/hook")}, {"secret": SECRET}
    )
    webhook.script(Reply(500), Reply(503))
    delivery_id, key = await _delivery(sched_db, seeder.tenant_id, channel="webhook")

    row = await _reaches(sched_db, delivery_id, "sent", within=8)
    assert (row.attempts, row.provider, row.last_error) == (3, "webhook", None)
    mine = [(r.headers, r.body) for r in webhook.requests_to("/hook") if r.json()["delivery_id"] == delivery_id]
    assert len(mine) == 3
    assert {headers["idempotency-key"] for headers, _ in mine} == {key}
    for headers, body in mine:
        timestamp = headers["x-kalcifer-timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["x-kalcifer-signature"] == f"sha256={expected}"
        # Signed over the timestamp too: the body alone does not verify (a replay cannot reuse it with a new time).
        assert (
            headers["x-kalcifer-signature"] != "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
    assert json.loads(mine[0][1])["message"] == {"subject": "hi", "body": "", "html_body": ""}


async def test_a_webhook_that_keeps_failing_marks_the_delivery_failed(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess, webhook: Endpoint
) -> None:
    webhook.script(Reply(400))  # final: a retry cannot help
    delivery_id, _ = await _delivery(sched_db, seeder.tenant_id, channel="webhook")

    row = await _reaches(sched_db, delivery_id, "failed", within=5)
    assert row.attempts == 1
    assert "400" in row.last_error


async def test_a_webhook_on_an_address_not_allowlisted_fails_as_an_unreachable_host(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    # 127.0.0.2 is loopback like the allowlisted 127.0.0.1, but not listed: refused before any connection.
    await store_provider(
        sched_db, seeder.tenant_id, "push", "webhook", {"url": "http://127.0.0.2:9/hook"}, {"secret": SECRET}
    )
    try:
        delivery_id, _ = await _delivery(sched_db, seeder.tenant_id, channel="push")
        row = await _reaches(sched_db, delivery_id, "failed", within=15)
    finally:
        await forget_provider(sched_db, seeder.tenant_id, "push")
    assert row.last_error == "webhook unreachable: no answer from 127.0.0.2"
    assert "OUTBOUND_ALLOWLIST" in scheduler.log()  # the operator's log says why


async def test_a_delivery_left_sending_by_a_crash_is_resent_with_the_same_key(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    # A worker claimed it an hour ago and died between the send and the mark.
    delivery_id, key = await _delivery(
        sched_db,
        seeder.tenant_id,
        channel="push",
        status="sending",
        attempts=1,
        update_time=utc_now() - timedelta(hours=1),
    )

    await _reaches(sched_db, delivery_id, "sent", within=5)
    assert (await _row(sched_db, delivery_id)).attempts == 2
    resent = [line for line in scheduler.log().splitlines() if "delivery sent" in line and key in line]
    assert len(resent) == 1
    assert json.loads(resent[0])["idempotency_key"] == key


async def test_a_delivery_being_sent_right_now_is_not_taken_again(
    sched_db: AsyncEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    delivery_id, _ = await _delivery(sched_db, seeder.tenant_id, channel="in_app", status="sending", attempts=1)

    await _delivery_sweeps_ran(sched_db, seeder.tenant_id)
    row = await _row(sched_db, delivery_id)
    assert (row.status, row.attempts) == ("sending", 1)


class _SmtpServer:
    """A minimal real SMTP server (asyncio streams): answers `data_codes` to DATA in turn (then 250), keeps mail."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.data_codes: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250 test\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                writer.write(b"250 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                body = await reader.readuntil(b"\r\n.\r\n")
                code = self.data_codes.pop(0) if self.data_codes else 250
                if code == 250:
                    self.messages.append(body)
                writer.write(f"{code} {'queued' if code == 250 else 'try later'}\r\n".encode())
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"502 no\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
async def smtp() -> AsyncIterator[_SmtpServer]:
    """The tenant's mail server."""
    server = _SmtpServer()
    await server.start()
    yield server
    await server.stop()


async def test_an_email_goes_out_through_smtp_once_with_a_message_id_from_its_key(
    sched_db: AsyncEngine, scheduler: SchedulerProcess, smtp: _SmtpServer
) -> None:
    tenant = uuid.uuid4()
    async with sched_db.begin() as connection:
        await connection.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'mail')"), {"id": tenant})
        await connection.execute(
            text(
                "INSERT INTO provider_configs (tenant_id, channel, provider, settings)"
                " VALUES (:tenant, 'email', 'smtp', CAST(:settings AS jsonb))"
            ),
            {
                "tenant": tenant,
                # A plain-text relay on a trusted network (this test's server speaks no TLS).
                "settings": json.dumps({"host": "127.0.0.1", "port": smtp.port, "from": "k@x.test", "tls": "none"}),
            },
        )
    smtp.data_codes = [451]  # the first attempt is deferred by the server: retried
    delivery_id, key = await _delivery(
        sched_db, tenant, payload={"to": "ann@x.test", "subject": "Welcome", "text": "Hello Ann"}
    )

    row = await _reaches(sched_db, delivery_id, "sent", within=6)
    assert (row.attempts, row.provider) == (2, "smtp")
    [mail] = [m for m in smtp.messages if key.encode() in m]
    assert b"Subject: Welcome" in mail
    assert b"To: ann@x.test" in mail
    assert b"Hello Ann" in mail
    assert row.provider_message_id.encode() in mail  # Message-ID: derived from the idempotency key


class _Trap:
    """Unpickling this runs `os.system` (what an attacker with Redis write access would send)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


async def test_a_pickled_job_in_redis_is_never_unpickled(
    sched_db: AsyncEngine,
    seeder: Seeder,
    scheduler: SchedulerProcess,
    sched_redis_url: str,
    tmp_path: Any,
) -> None:
    import pickle

    import redis.asyncio as aioredis

    marker = tmp_path / "pwned"
    job = {"t": 1, "f": "send_delivery", "a": [_Trap(str(marker))], "k": {}, "et": None, "st": 0}
    client = aioredis.Redis.from_url(sched_redis_url)
    try:
        await client.set("arq:job:evil", pickle.dumps(job))
        await client.zadd("deliveries", {"evil": 0})
    finally:
        await client.aclose()

    # The worker took the job off the queue (and refused it) and goes on sending.
    delivery_id, _ = await _delivery(sched_db, seeder.tenant_id, channel="sms")
    await _reaches(sched_db, delivery_id, "sent", within=10)
    assert not marker.exists()
