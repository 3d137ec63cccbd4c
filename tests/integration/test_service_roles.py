"""Each service's PostgreSQL role (SPEC 10) has exactly the writes it owns: the database, not only the code,
keeps the API and the scheduler from writing instances, steps and waits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from kalcifer_common.db.session import create_engine
from kalcifer_common.settings import ApiSettings, EngineSettings, SchedulerSettings
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

ROLES = {
    "api": ApiSettings().database_role,
    "engine": EngineSettings().database_role,
    "scheduler": SchedulerSettings().database_role,
}


@pytest.fixture
async def as_service(database_url: str) -> AsyncIterator[dict[str, AsyncEngine]]:
    engines = {name: create_engine(database_url, role=role, pool_size=1) for name, role in ROLES.items()}
    yield engines
    for engine in engines.values():
        await engine.dispose()


async def _try(db: AsyncEngine, statement: str) -> str:
    """'ok' when `statement` is allowed (it is rolled back either way), else PostgreSQL's message."""
    async with db.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(text(statement))
        except ProgrammingError as error:
            return str(error.orig)
        finally:
            await transaction.rollback()
    return "ok"


def test_each_service_defaults_to_its_own_role() -> None:
    assert ROLES == {"api": "kalcifer_api", "engine": "kalcifer_engine", "scheduler": "kalcifer_scheduler"}


async def test_the_api_role_cannot_write_instances_steps_or_waits(as_service: dict[str, AsyncEngine]) -> None:
    api = as_service["api"]
    assert "permission denied for table flow_instances" in await _try(api, "UPDATE flow_instances SET status = status")
    assert "permission denied for table execution_steps" in await _try(api, "DELETE FROM execution_steps")
    assert "permission denied for table waits" in await _try(api, "UPDATE waits SET status = 'cancelled'")
    assert await _try(api, "SELECT count(*) FROM flow_instances") == "ok", "the API reads instances"
    assert await _try(api, "UPDATE flows SET status = status") == "ok", "the API owns flows"


async def test_the_scheduler_role_leases_waits_in_its_own_table_and_cannot_write_instances_or_waits(
    as_service: dict[str, AsyncEngine],
) -> None:
    scheduler = as_service["scheduler"]
    assert "permission denied for table flow_instances" in await _try(scheduler, "DELETE FROM flow_instances")
    assert "permission denied for table waits" in await _try(scheduler, "UPDATE waits SET status = 'fired'")
    assert await _try(scheduler, "DELETE FROM wait_claims") == "ok", "its leases live in its own table"
    assert await _try(scheduler, "UPDATE deliveries SET status = status") == "ok"
    assert "permission denied for table flows" in await _try(scheduler, "UPDATE flows SET status = status")


async def test_the_scheduler_alone_writes_what_segment_entry_has_read(as_service: dict[str, AsyncEngine]) -> None:
    for table in ("segment_entry_cursors", "segment_entry_members"):
        assert await _try(as_service["scheduler"], f"DELETE FROM {table}") == "ok"
        for service in ("api", "engine"):
            assert f"permission denied for table {table}" in await _try(as_service[service], f"DELETE FROM {table}")
            assert await _try(as_service[service], f"SELECT count(*) FROM {table}") == "ok"


async def test_the_api_deleting_a_customer_deletes_their_segment_memberships(
    as_service: dict[str, AsyncEngine], db_engine: AsyncEngine
) -> None:
    tenant, flow, customer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db_engine.begin() as conn:
        await conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, 'roles')"), {"t": tenant})
        await conn.execute(
            text("INSERT INTO flows (id, tenant_id, name) VALUES (:f, :t, 'f')"), {"f": flow, "t": tenant}
        )
        await conn.execute(
            text("INSERT INTO customers (id, tenant_id, external_id) VALUES (:c, :t, 'ann')"),
            {"c": customer, "t": tenant},
        )
    async with as_service["scheduler"].begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO segment_entry_cursors (flow_id, node_id, tenant_id, segment_id, segment_revision)"
                " VALUES (:f, 'entry', :t, gen_random_uuid(), 1)"
            ),
            {"f": flow, "t": tenant},
        )
        await conn.execute(
            text(
                "INSERT INTO segment_entry_members (flow_id, node_id, customer_id, tenant_id, participant_id)"
                " VALUES (:f, 'entry', :c, :t, 'ann')"
            ),
            {"f": flow, "c": customer, "t": tenant},
        )

    async with as_service["api"].begin() as conn:
        await conn.execute(text("DELETE FROM customers WHERE id = :c"), {"c": customer})

    async with db_engine.connect() as conn:
        left = await conn.execute(text("SELECT count(*) FROM segment_entry_members WHERE flow_id = :f"), {"f": flow})
        assert left.scalar_one() == 0


async def test_the_engine_role_writes_instances_but_not_what_the_api_owns(as_service: dict[str, AsyncEngine]) -> None:
    engine = as_service["engine"]
    assert await _try(engine, "UPDATE flow_instances SET status = status") == "ok"
    assert await _try(engine, "DELETE FROM waits") == "ok"
    assert "permission denied for table flows" in await _try(engine, "UPDATE flows SET status = status")
    assert "permission denied for table api_keys" in await _try(engine, "SELECT * FROM api_keys")


async def test_templates_and_provider_configs_are_the_apis_and_delivery_statuses_the_schedulers(
    as_service: dict[str, AsyncEngine],
) -> None:
    api, engine, scheduler = as_service["api"], as_service["engine"], as_service["scheduler"]
    assert await _try(api, "DELETE FROM templates") == "ok", "the API owns templates"
    assert await _try(api, "UPDATE provider_configs SET settings = settings") == "ok", "and channel providers"
    for reader in (engine, scheduler):
        assert await _try(reader, "SELECT count(*) FROM templates") == "ok", (
            "the engine validates, the scheduler renders"
        )
        assert "permission denied for table templates" in await _try(reader, "UPDATE templates SET body = body")
    assert await _try(scheduler, "SELECT secrets FROM provider_configs") == "ok", "the scheduler opens the secrets"
    assert "permission denied for table provider_configs" in await _try(
        scheduler, "UPDATE provider_configs SET secrets = secrets"
    )
    # One writer of a delivery's status: the API relays providers' reports to the scheduler instead.
    assert "permission denied for table deliveries" in await _try(api, "UPDATE deliveries SET status = status")
    assert await _try(scheduler, "UPDATE deliveries SET status = status") == "ok"


async def test_the_engine_alone_writes_the_analytics_counters_the_api_reads(as_service: dict[str, AsyncEngine]) -> None:
    engine, api, scheduler = as_service["engine"], as_service["api"], as_service["scheduler"]
    assert await _try(engine, "UPDATE flow_counters SET value = value + 1") == "ok"
    assert await _try(engine, "SELECT count(*) FROM flow_counters") == "ok"
    assert "permission denied for table flow_counters" in await _try(engine, "DELETE FROM flow_counters")
    assert await _try(api, "SELECT count(*) FROM flow_counters") == "ok", "AnalyticsService reads them"
    assert "permission denied for table flow_counters" in await _try(api, "UPDATE flow_counters SET value = 0")
    assert "permission denied for table flow_counters" in await _try(scheduler, "SELECT count(*) FROM flow_counters")
