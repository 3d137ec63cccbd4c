"""The migrations build exactly the schema the models describe, and that schema enforces the core invariants."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from kalcifer_common.db import (
    Base,
    Flow,
    FlowInstance,
    Tenant,
    create_engine,
    create_sessionmaker,
    current_revision,
    current_revision_async,
    head_revision,
    to_sync_url,
    upgrade_to_head,
    upgrade_to_head_async,
    with_database,
)
from kalcifer_common.db.migrate import downgrade_to
from sqlalchemy import Connection, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _on_server(statement: str) -> None:
    connection = await asyncpg.connect(to_sync_url(SERVER_URL), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _scratch_database_name() -> str:
    return f"kalcifer_test_migrations_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def empty_database_url() -> Iterator[str]:
    """A new, uniquely named, empty database on the test server; dropped afterwards."""
    name = _scratch_database_name()
    asyncio.run(_on_server(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(SERVER_URL, name)
    finally:
        asyncio.run(_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def migrated_url(empty_database_url: str) -> str:
    """The module's database, migrated to head by the code path services use."""
    assert current_revision(empty_database_url) is None
    upgrade_to_head(empty_database_url)
    return empty_database_url


async def _create_all(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def models_database_url() -> Iterator[str]:
    """A second database whose schema SQLAlchemy created straight from the models (`create_all`)."""
    name = _scratch_database_name()
    asyncio.run(_on_server(f'CREATE DATABASE "{name}"'))
    try:
        url = with_database(SERVER_URL, name)
        asyncio.run(_create_all(url))
        yield url
    finally:
        asyncio.run(_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database, created in the running loop."""
    engine = create_engine(migrated_url, pool_size=2)
    yield engine
    await engine.dispose()


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, Base.metadata))


async def _catalog(url: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """Every index and constraint of the public schema, as PostgreSQL itself prints them."""
    connection = await asyncpg.connect(to_sync_url(url), timeout=10)
    try:
        indexes = await connection.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        constraints = await connection.fetch(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'alembic_version'"
        )
    finally:
        await connection.close()
    return {tuple(row) for row in indexes}, {tuple(row) for row in constraints}


async def _new_tenant_and_flow(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    async with engine.begin() as connection:
        tenant_id = (await connection.execute(insert(Tenant).values(name="acme").returning(Tenant.id))).scalar_one()
        flow_id = (
            await connection.execute(
                insert(Flow).values(tenant_id=tenant_id, name="welcome", status="active").returning(Flow.id)
            )
        ).scalar_one()
    return tenant_id, flow_id


async def _start_instance(
    engine: AsyncEngine, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, exclusive: bool = True
) -> uuid.UUID:
    async with engine.begin() as connection:
        result = await connection.execute(
            insert(FlowInstance)
            .values(
                tenant_id=tenant_id,
                flow_id=flow_id,
                version_number=1,
                participant_id="participant-1",
                status="running",
                exclusive=exclusive,
            )
            .returning(FlowInstance.id)
        )
        instance_id: uuid.UUID = result.scalar_one()
    return instance_id


def test_upgrade_brings_a_fresh_database_to_head(migrated_url: str) -> None:
    assert current_revision(migrated_url) == head_revision()


def test_upgrade_again_is_a_no_op(migrated_url: str) -> None:
    upgrade_to_head(migrated_url)

    assert current_revision(migrated_url) == head_revision()


async def test_upgrade_from_async_code_runs_in_a_thread(migrated_url: str) -> None:
    await upgrade_to_head_async(migrated_url)

    assert await current_revision_async(migrated_url) == head_revision()


async def test_sync_migrate_refuses_a_running_loop(migrated_url: str) -> None:
    with pytest.raises(RuntimeError, match="upgrade_to_head_async"):
        upgrade_to_head(migrated_url)


async def test_every_model_table_exists(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        tables = await connection.run_sync(_table_names)

    assert set(Base.metadata.tables) <= tables
    assert tables - set(Base.metadata.tables) == {"alembic_version"}


async def test_models_and_migrated_schema_do_not_differ(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)

    assert differences == []


async def test_indexes_and_constraints_match_a_schema_built_from_the_models(
    migrated_url: str, models_database_url: str
) -> None:
    # Alembic compares neither partial-index predicates nor CHECK constraints; PostgreSQL's own rendering of
    # both schemas does.
    migrated_indexes, migrated_constraints = await _catalog(migrated_url)
    model_indexes, model_constraints = await _catalog(models_database_url)

    assert migrated_indexes == model_indexes
    assert migrated_constraints == model_constraints


async def test_second_live_instance_for_the_same_participant_and_flow_is_rejected(engine: AsyncEngine) -> None:
    tenant_id, flow_id = await _new_tenant_and_flow(engine)
    first = await _start_instance(engine, tenant_id, flow_id)

    with pytest.raises(IntegrityError, match="uq_flow_instances_live_participant"):
        await _start_instance(engine, tenant_id, flow_id)

    async with engine.begin() as connection:
        await connection.execute(update(FlowInstance).where(FlowInstance.id == first).values(status="completed"))
    second = await _start_instance(engine, tenant_id, flow_id)

    assert second != first


async def test_non_exclusive_instances_may_run_side_by_side(engine: AsyncEngine) -> None:
    tenant_id, flow_id = await _new_tenant_and_flow(engine)
    await _start_instance(engine, tenant_id, flow_id)

    await _start_instance(engine, tenant_id, flow_id, exclusive=False)
    await _start_instance(engine, tenant_id, flow_id, exclusive=False)

    async with engine.connect() as connection:
        live = (
            (await connection.execute(select(FlowInstance.id).where(FlowInstance.flow_id == flow_id))).scalars().all()
        )
    assert len(live) == 3


async def test_orm_update_bumps_revision_and_reads_back_server_values(engine: AsyncEngine) -> None:
    tenant_id, flow_id = await _new_tenant_and_flow(engine)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        flow = await session.get_one(Flow, flow_id)
        created, first_revision = flow.update_time, flow.revision
        flow.name = "welcome, renamed"

    # Readable after commit without a lazy load: eager defaults brought the new values back with RETURNING.
    assert flow.revision == first_revision + 1
    assert flow.update_time >= created
    assert flow.tenant_id == tenant_id


async def test_deleting_a_tenant_deletes_its_rows(engine: AsyncEngine) -> None:
    tenant_id, flow_id = await _new_tenant_and_flow(engine)
    await _start_instance(engine, tenant_id, flow_id)

    async with engine.begin() as connection:
        await connection.execute(delete(Tenant).where(Tenant.id == tenant_id))

    async with engine.connect() as connection:
        left = (await connection.execute(select(Flow.id).where(Flow.tenant_id == tenant_id))).all()
    assert left == []


def test_downgrade_to_base_then_upgrade_again() -> None:
    name = _scratch_database_name()
    asyncio.run(_on_server(f'CREATE DATABASE "{name}"'))
    url = with_database(SERVER_URL, name)
    try:
        upgrade_to_head(url)
        downgrade_to(url, "base")
        assert current_revision(url) is None

        upgrade_to_head(url)
        assert current_revision(url) == head_revision()
    finally:
        asyncio.run(_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_replicas_migrating_at_the_same_time_all_succeed() -> None:
    name = _scratch_database_name()
    asyncio.run(_on_server(f'CREATE DATABASE "{name}"'))
    url = with_database(SERVER_URL, name)
    script = f"from kalcifer_common.db import upgrade_to_head; upgrade_to_head({url!r})"
    try:
        replicas = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
        exit_codes = [replica.wait(timeout=120) for replica in replicas]

        assert exit_codes == [0, 0, 0]
        assert current_revision(url) == head_revision()
    finally:
        asyncio.run(_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
