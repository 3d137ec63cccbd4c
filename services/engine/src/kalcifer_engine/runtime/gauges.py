"""The gauges the engine reads from PostgreSQL for /metrics, refreshed by a `kalcifer_common.metrics.PeriodicRefresh`
(never per RPC or per scrape: the cost is one grouped count per METRICS_REFRESH_SECONDS, whoever scrapes)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_engine.metrics import set_instance_counts
from kalcifer_engine.repo import instances

# A count that takes longer (a table far beyond its retention on a slow disk) is given up; the gauge keeps its
# last values and the next period tries again.
COUNT_TIMEOUT_MS = 5000


async def refresh_instance_counts(db: AsyncEngine) -> None:
    """Count instances by status, in a short transaction of its own."""
    async with db.begin() as conn:
        counts = await instances.count_by_status(conn, timeout_ms=COUNT_TIMEOUT_MS)
    set_instance_counts(counts)
