"""Whether PostgreSQL answers right now, asked on a connection of the probe's own: a pool that is busy under load
never makes a healthy database look down, and a dead pooled connection (after a restart) is replaced on the spot."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from kalcifer_common.db.session import create_engine
from kalcifer_common.logging import get_logger

_log = get_logger(__name__)

PROBE_TIMEOUT_SECONDS = 1.5


class DatabaseProbe:
    """`SELECT 1` as the service's own role, bounded by a timeout; create it inside the running event loop."""

    def __init__(self, url: str, *, role: str = "", timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
        # One connection, checked before use (pre-ping) so that the first probe after a restart reconnects.
        self._engine = create_engine(url, role=role, pool_size=1, max_overflow=0, pre_ping=True)
        self._timeout = timeout_seconds

    async def answers(self) -> bool:
        """True when PostgreSQL ran `SELECT 1` within the timeout."""
        try:
            async with asyncio.timeout(self._timeout):
                async with self._engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure to answer means "down" for the health status
            _log.debug("database probe failed", error=repr(error))
            return False
        return True

    async def close(self) -> None:
        """Close the probe's connection."""
        await self._engine.dispose()
