"""The fuzzer's "0 rows changed" rests on database fingerprints: any insert, update (even to the same values) or
delete changes them, and nothing else does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.databases import scratch_database
from tests.support.fingerprints import DatabaseFingerprints, changed_tables


@pytest.fixture(scope="module")
def fingerprinted(servers: tuple[str, str]) -> Iterator[tuple[str, DatabaseFingerprints]]:
    with scratch_database(servers[0], prefix="kalcifer_fingerprints") as url:
        fingerprints = DatabaseFingerprints(url)
        try:
            yield url, fingerprints
        finally:
            fingerprints.close()


def _execute(url: str, statement: str, *args: object) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()

    asyncio.run(run())


def test_reading_changes_nothing(fingerprinted: tuple[str, DatabaseFingerprints]) -> None:
    url, fingerprints = fingerprinted
    before = fingerprints.take()
    _execute(url, "SELECT * FROM tenants FOR UPDATE")
    assert changed_tables(before, fingerprints.settled()) == {}


def test_every_write_changes_its_table_only(fingerprinted: tuple[str, DatabaseFingerprints]) -> None:
    url, fingerprints = fingerprinted
    tenant_id = uuid.uuid4()
    before = fingerprints.take()
    _execute(url, "INSERT INTO tenants (id, name) VALUES ($1, 'probe')", tenant_id)
    inserted = fingerprints.take()
    assert changed_tables(before, inserted) == {"tenants": "rows 0 -> 1"}

    _execute(url, "UPDATE tenants SET name = name WHERE id = $1", tenant_id)
    rewritten = fingerprints.take()
    assert changed_tables(inserted, rewritten) == {"tenants": "rows changed"}

    _execute(url, "DELETE FROM tenants WHERE id = $1", tenant_id)
    assert changed_tables(rewritten, fingerprints.take()) == {"tenants": "rows 1 -> 0"}
