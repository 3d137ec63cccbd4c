"""Deliveries rendered from their templates at send time and sent for real (SPEC 7), on real PostgreSQL and Redis:
the template renders in the scheduler's sandbox over the variables the node stored; a render error, a deleted
template or a runaway fails the delivery at once with its reason; secrets open only where they were sealed; SMTP
verifies TLS, logs in with the sealed password and tells permanent refusals from deferrals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kalcifer_common.channels import secret_context
from kalcifer_common.secrets import SecretBox
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import (
    SECRET_KEY,
    RecordingEngine,
    SchedulerProcess,
    scheduler_env,
    store_provider,
)
from tests.support.endpoint import Endpoint, running_endpoint
from tests.support.eventually import eventually
from tests.support.smtp import SmtpServer, running_smtp

VARIABLES = {
    "customer": {"external_id": "ada", "email": "ada@x.test", "attributes": {"first_name": "Ada"}},
    "order": {"id": 42},
    "data": {"code": "X1"},
    "participant_id": "ada",
}
LOGIN = ("kalcifer", "smtp-password-123")


@pytest.fixture(scope="module")
def env(sched_database_url: str, sched_redis_url: str, engine: RecordingEngine, token: str) -> dict[str, str]:
    """The module's schedulers: a short template budget, so a runaway template is stopped quickly."""
    return scheduler_env(sched_database_url, sched_redis_url, engine.address, token, TEMPLATE_TIMEOUT_MS="300")


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    """A mail server offering STARTTLS with a certificate nobody trusts by default, and a login."""
    with running_smtp(login=LOGIN) as server:
        yield server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    """A webhook receiver."""
    with running_endpoint() as running:
        yield running


async def _tenant(db: AsyncEngine) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    async with db.begin() as connection:
        await connection.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'rendering')"), {"id": tenant_id})
    return tenant_id


async def _template(
    db: AsyncEngine, tenant_id: uuid.UUID, template_id: str, channel: str = "email", **parts: str
) -> None:
    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO templates (tenant_id, id, channel, subject, body, html_body)"
                " VALUES (:tenant, :id, :channel, :subject, :body, :html_body)"
            ),
            {
                "tenant": tenant_id,
                "id": template_id,
                "channel": channel,
                "subject": parts.get("subject", ""),
                "body": parts.get("body", ""),
                "html_body": parts.get("html_body", ""),
            },
        )


async def _delivery(
    db: AsyncEngine, tenant_id: uuid.UUID, template_id: str, channel: str = "email", **payload: Any
) -> tuple[str, str]:
    """A pending delivery as a channel node makes it: contact, data and the template's variables."""
    delivery_id, key = uuid.uuid4(), f"idem-{uuid.uuid4()}"
    body = {"participant_id": "ada", "email": "ada@x.test", "data": {"code": "X1"}, "variables": VARIABLES} | payload
    async with db.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO deliveries (id, tenant_id, node_id, participant_id, channel, template_id, payload,
                    idempotency_key)
                VALUES (:id, :tenant, 'mail', 'ada', :channel, :template, CAST(:payload AS jsonb), :key)
                """
            ),
            {
                "id": delivery_id,
                "tenant": tenant_id,
                "channel": channel,
                "template": template_id,
                "payload": json.dumps(body),
                "key": key,
            },
        )
    return str(delivery_id), key


async def _row(db: AsyncEngine, delivery_id: str) -> Any:
    async with db.connect() as connection:
        return (await connection.execute(text("SELECT * FROM deliveries WHERE id = :id"), {"id": delivery_id})).one()


async def _settled(db: AsyncEngine, delivery_id: str, status: str, within: float = 8) -> Any:
    return await eventually(
        lambda: _row(db, delivery_id),
        until=lambda row: row.status == status,
        within=within,
        interval=0.1,
        what=f"delivery {delivery_id} {status}",
    )


def _sent_line(scheduler: SchedulerProcess, key: str) -> dict[str, Any]:
    [line] = [line for line in scheduler.log().splitlines() if "delivery sent" in line and key in line]
    parsed: dict[str, Any] = json.loads(line)
    return parsed


async def test_the_template_is_rendered_over_the_variables_its_node_stored(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    await _template(
        sched_db,
        tenant,
        "welcome",
        subject="Hi {{ customer.attributes.first_name }}\nfor order {{ order.id }}",
        body="Your code is {{ data.code }}, {{ participant_id }}.",
        html_body="<p>{{ data.code | upper }}</p>",
    )
    delivery_id, key = await _delivery(sched_db, tenant, "welcome")

    row = await _settled(sched_db, delivery_id, "sent")
    assert (row.attempts, row.provider, row.last_error) == (1, "log", None)
    logged = _sent_line(scheduler, key)
    # The subject is one line whatever the template or its data say.
    assert logged["subject"] == "Hi Ada for order 42"
    assert logged["body"] == "Your code is X1, ada."
    assert logged["html_body_bytes"] == len("<p>X1</p>")
    assert "variables" not in logged["payload"], "the template's variables are not the provider's to see"


async def test_a_node_subject_overrides_the_templates_and_is_rendered_too(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "promo", subject="Template subject", body="b")
    delivery_id, key = await _delivery(
        sched_db, tenant, "promo", subject="Just for {{ customer.attributes.first_name }}"
    )

    await _settled(sched_db, delivery_id, "sent")
    assert _sent_line(scheduler, key)["subject"] == "Just for Ada"


async def test_an_undefined_variable_fails_the_delivery_at_once_naming_the_part_and_the_variable(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "strict", subject="ok", body="Dear {{ customer.attributes.last_name }}")
    delivery_id, key = await _delivery(sched_db, tenant, "strict")

    row = await _settled(sched_db, delivery_id, "failed")
    assert row.attempts == 1, "the same data would fail again: no retry"
    assert row.last_error.startswith("template 'strict' body: ")
    assert "last_name" in row.last_error
    assert row.final_time is not None
    assert not [line for line in scheduler.log().splitlines() if "delivery sent" in line and key in line]


async def test_a_runaway_template_is_stopped_by_its_budget_and_fails_its_delivery(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    await _template(sched_db, tenant, "spin", body=spin)
    delivery_id, _ = await _delivery(sched_db, tenant, "spin")

    row = await _settled(sched_db, delivery_id, "failed")
    assert row.attempts == 1
    assert "ran longer than its budget of 300 ms" in row.last_error
    # The scheduler itself is fine: the next delivery goes out.
    await _template(sched_db, tenant, "fine", body="fine")
    after, _ = await _delivery(sched_db, tenant, "fine")
    await _settled(sched_db, after, "sent")


async def test_a_deleted_template_or_one_of_another_channel_fails_the_delivery(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "otp", channel="sms", body="{{ data.code }}")
    gone, _ = await _delivery(sched_db, tenant, "deleted")
    wrong, _ = await _delivery(sched_db, tenant, "otp", channel="email")

    assert "template 'deleted' does not exist" in (await _settled(sched_db, gone, "failed")).last_error
    assert "template 'otp' is for sms, not email" in (await _settled(sched_db, wrong, "failed")).last_error


async def _attempted(db: AsyncEngine, delivery_id: str) -> Any:
    return await eventually(
        lambda: _row(db, delivery_id),
        until=lambda found: found.attempts >= 1 and found.last_error is not None,
        within=8,
        interval=0.1,
        what=f"a failed attempt of {delivery_id}",
    )


async def test_a_secret_opens_only_with_its_key_and_only_where_it_was_sealed(
    sched_db: AsyncEngine, scheduler: SchedulerProcess, endpoint: Endpoint
) -> None:
    unknown_key, moved = await _tenant(sched_db), await _tenant(sched_db)
    for tenant in (unknown_key, moved):
        await _template(sched_db, tenant, "hook", channel="push", body="b")
    await store_provider(
        sched_db,
        unknown_key,
        "push",
        "webhook",
        {"url": endpoint.url("/unknown-key")},
        {"secret": "x" * 20},
        key="k" * 40,
    )
    # Sealed with the right key for another tenant's provider, then copied into this one's row.
    await store_provider(sched_db, moved, "push", "webhook", {"url": endpoint.url("/moved")})
    elsewhere = SecretBox([SECRET_KEY]).seal("y" * 20, context=secret_context(str(unknown_key), "push", "secret"))
    async with sched_db.begin() as connection:
        await connection.execute(
            text("UPDATE provider_configs SET secrets = CAST(:secrets AS jsonb) WHERE tenant_id = :tenant"),
            {"secrets": json.dumps({"secret": elsewhere}), "tenant": moved},
        )
    first, _ = await _delivery(sched_db, unknown_key, "hook", channel="push")
    second, _ = await _delivery(sched_db, moved, "hook", channel="push")

    assert "sealed with a key that is neither KALCIFER_SECRET_KEY" in (await _attempted(sched_db, first)).last_error
    assert "does not open here" in (await _attempted(sched_db, second)).last_error
    assert endpoint.requests_to("/unknown-key") == []
    assert endpoint.requests_to("/moved") == []


async def test_smtp_will_not_send_to_a_server_whose_certificate_it_cannot_verify(
    sched_db: AsyncEngine, scheduler: SchedulerProcess, smtp: SmtpServer
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "welcome", subject="s", body="b")
    # TLS by default (STARTTLS, required), verified against the system's CAs, which do not know this server.
    await store_provider(
        sched_db, tenant, "email", "smtp", {"host": "127.0.0.1", "port": smtp.port, "from": "k@x.test"}
    )
    delivery_id, _ = await _delivery(sched_db, tenant, "welcome", email="untrusted@x.test")

    row = await _settled(sched_db, delivery_id, "failed")
    assert row.attempts == 1
    assert "TLS certificate is not trusted" in row.last_error
    assert smtp.mail_to("untrusted@x.test") == []


async def test_smtp_sends_the_rendered_email_over_verified_starttls_logged_in_with_the_sealed_password(
    sched_db: AsyncEngine, scheduler: SchedulerProcess, smtp: SmtpServer
) -> None:
    tenant = await _tenant(sched_db)
    await _template(
        sched_db,
        tenant,
        "welcome",
        subject="Welcome, {{ customer.attributes.first_name }}",
        body="Your code: {{ data.code }}",
        html_body="<b>{{ data.code }}</b>",
    )
    settings = {"host": "127.0.0.1", "port": smtp.port, "from": "news@acme.test", "from_name": "Acme"}
    settings |= {"username": LOGIN[0], "ca_cert": smtp.ca_pem}
    await store_provider(sched_db, tenant, "email", "smtp", settings, {"password": LOGIN[1]})
    delivery_id, key = await _delivery(sched_db, tenant, "welcome", email="ada@acme.test", reply_to="help@acme.test")

    row = await _settled(sched_db, delivery_id, "sent")
    assert (row.attempts, row.provider) == (1, "smtp")
    [mail] = smtp.mail_to("ada@acme.test")
    assert (mail.over_tls, mail.login, mail.mail_from) == (True, LOGIN[0], "news@acme.test")
    assert mail.message["Subject"] == "Welcome, Ada"
    assert mail.message["From"] == "Acme <news@acme.test>"
    assert mail.message["Reply-To"] == "help@acme.test"
    assert mail.message["Message-ID"] == row.provider_message_id
    assert mail.message["X-Kalcifer-Idempotency-Key"] == key
    assert mail.text().strip() == "Your code: X1"
    assert mail.html().strip() == "<b>X1</b>"
    assert LOGIN[1] not in scheduler.log(), "secrets are never logged"


async def test_smtp_fails_a_refused_recipient_at_once_and_retries_a_deferral(
    sched_db: AsyncEngine, scheduler: SchedulerProcess, smtp: SmtpServer
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "welcome", subject="s", body="b")
    settings = {"host": "127.0.0.1", "port": smtp.port, "from": "k@x.test", "ca_cert": smtp.ca_pem}
    await store_provider(sched_db, tenant, "email", "smtp", settings)
    smtp.refused_recipients.add("nobody@x.test")
    refused, _ = await _delivery(sched_db, tenant, "welcome", email="nobody@x.test")
    refused_row = await _settled(sched_db, refused, "failed")
    assert refused_row.attempts == 1
    assert "smtp refused the recipient (550)" in refused_row.last_error

    smtp.data_codes.append(451)  # the server is busy once: a transient error, retried with backoff
    deferred, _ = await _delivery(sched_db, tenant, "welcome", email="later@x.test")
    deferred_row = await _settled(sched_db, deferred, "sent")
    assert deferred_row.attempts == 2
    assert len(smtp.mail_to("later@x.test")) == 1


async def test_smtp_goes_only_where_the_outbound_policy_lets_it(
    sched_db: AsyncEngine, scheduler: SchedulerProcess
) -> None:
    tenant = await _tenant(sched_db)
    await _template(sched_db, tenant, "welcome", subject="s", body="b")
    # 127.0.0.2 is loopback like the allowlisted 127.0.0.1, but not listed: refused before any connection.
    await store_provider(sched_db, tenant, "email", "smtp", {"host": "127.0.0.2", "port": 25, "from": "k@x.test"})
    delivery_id, _ = await _delivery(sched_db, tenant, "welcome")

    row = await _settled(sched_db, delivery_id, "failed", within=20)
    # Told and retried like any unreachable host (no oracle of the private network); the operator's log says why.
    assert row.last_error == "smtp server unreachable: no answer from 127.0.0.2"
    assert row.attempts > 1
    assert "OUTBOUND_ALLOWLIST" in scheduler.log()
