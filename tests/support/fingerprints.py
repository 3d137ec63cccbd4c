"""A fingerprint of every table of a database: its row count and an order-free checksum of its row versions.

Every insert, update or delete writes a new row version (a new `ctid`, a new `xmin`) or removes one, so two equal
fingerprints mean no row was written in between, not even rewritten with the same values, without reading the
rows' contents. `changed_tables` names what differs. Read as the database owner, outside the services' roles.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

Fingerprint = dict[str, tuple[int, int]]

_TABLES = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'
ORDER BY table_name
"""


def changed_tables(before: Fingerprint, after: Fingerprint) -> dict[str, str]:
    """{table: "rows N -> M" or "rows changed"} for each table whose fingerprint differs."""
    changed: dict[str, str] = {}
    for table in sorted(before.keys() | after.keys()):
        (count_before, sum_before), (count_after, sum_after) = before.get(table, (0, 0)), after.get(table, (0, 0))
        if count_before != count_after:
            changed[table] = f"rows {count_before} -> {count_after}"
        elif sum_before != sum_after:
            changed[table] = "rows changed"
    return changed


class DatabaseFingerprints:
    """Fingerprints of one database over one connection, for synchronous tests (it runs its own event loop)."""

    def __init__(self, database_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._connection: Any = self._loop.run_until_complete(asyncpg.connect(dsn, timeout=10))
        tables = [row["table_name"] for row in self._run(self._connection.fetch(_TABLES))]
        # A hash of each row version's identity, summed: independent of row order, no sort and no row contents.
        self._query = " UNION ALL ".join(
            f"SELECT '{table}' AS name, count(*) AS rows, "
            "coalesce(sum(hashtextextended(t.ctid::text || ':' || t.xmin::text, 0)), 0)::text AS checksum "
            f'FROM "{table}" t'
            for table in tables
        )

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)

    def take(self) -> Fingerprint:
        """The fingerprint now."""
        rows = self._run(self._connection.fetch(self._query))
        return {row["name"]: (int(row["rows"]), int(row["checksum"])) for row in rows}

    def settled(self, *, within: float = 15.0, interval: float = 0.02) -> Fingerprint:
        """The fingerprint once two readings `interval` apart agree (background work of earlier calls, such as a
        run the engine finishes after answering, has stopped); AssertionError after `within` seconds."""
        deadline = time.monotonic() + within
        last = self.take()
        while True:
            time.sleep(interval)
            current = self.take()
            if current == last:
                return current
            if time.monotonic() >= deadline:
                raise AssertionError(f"the database kept changing for {within}s: {changed_tables(last, current)}")
            last = current

    def close(self) -> None:
        """Close the connection and the loop."""
        try:
            self._run(self._connection.close())
        finally:
            self._loop.close()
