"""`Runtime`: what every instance operation shares (database, settings, registries, graphs, scheduler client).

Built once per engine process from `EngineDeps`; holds nothing per instance (SPEC 9): the graph cache is bounded
and keyed by immutable (flow, version) pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kalcifer_common.errors import NotFound
from kalcifer_common.logging import get_logger
from kalcifer_common.sandbox import ExpressionSandbox, SandboxLimits
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.domain.graph import FlowGraph
from kalcifer_engine.domain.tallies import Tally
from kalcifer_engine.metrics import RunCounts
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.repo.counters import write_tally
from kalcifer_engine.repo.flows import load_graph
from kalcifer_engine.repo.instances import InstanceRow
from kalcifer_engine.runtime.run import Effects, InstanceRun
from kalcifer_engine.runtime.scheduler_client import SchedulerClient
from kalcifer_engine.tenant_registry import registry_for

_log = get_logger(__name__)

# Effects of a lookback resume can arm new event waits, whose lookback can resume again; bound the chain.
MAX_LOOKBACK_ROUNDS = 8


class GraphCache:
    """Parsed graphs by (flow, version): published versions never change, so entries never go stale."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._graphs: OrderedDict[tuple[uuid.UUID, int], FlowGraph] = OrderedDict()

    async def get(self, conn: AsyncConnection, flow_id: uuid.UUID, version_number: int) -> FlowGraph:
        """The graph of one version; NOT_FOUND when the version does not exist."""
        key = (flow_id, version_number)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        stored = await load_graph(conn, flow_id, version_number)
        if stored is None:
            raise NotFound("flow version", f"flows/{flow_id}/versions/{version_number}")
        graph = FlowGraph.from_json(stored)
        self._graphs[key] = graph
        while len(self._graphs) > self._size:
            self._graphs.popitem(last=False)
        return graph


class Runtime:
    """The engine's instance machinery for one process."""

    def __init__(
        self,
        deps: EngineDeps,
        scheduler: SchedulerClient | None = None,
        expressions: ExpressionSandbox | None = None,
    ) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.db: AsyncEngine = deps.db
        self.graphs = GraphCache(deps.settings.graph_cache_size)
        self.scheduler = scheduler or SchedulerClient(
            deps.settings.scheduler_addr,
            token=deps.settings.kalcifer_internal_token,
            timeout_seconds=deps.settings.rpc_timeout_seconds,
            tls=deps.settings.tls(),
            reach_seconds=2 * deps.settings.timer_horizon_seconds if deps.settings.timer_horizon_seconds else None,
        )
        self._background: set[asyncio.Task[None]] = set()
        self.expressions = expressions or ExpressionSandbox(
            SandboxLimits(
                workers=deps.settings.cel_workers,
                timeout_seconds=deps.settings.cel_timeout_ms / 1000,
                memory_mb=deps.settings.cel_memory_mb,
            )
        )

    def spawn(self, work: Coroutine[Any, Any, object], *, name: str) -> None:
        """Run `work` in the background (a migration's batches); cancelled by `close`, logged if it fails."""

        async def logged() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - background work is durable (leases, recovery): log and let it retry
                _log.exception("background work failed", work=name)

        task = asyncio.get_running_loop().create_task(logged(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop background work, flush what the scheduler still has to hear, then stop the CEL workers."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.scheduler.close()
        await self.expressions.close()

    @staticmethod
    def now() -> datetime:
        """The clock of runs (timezone-aware UTC)."""
        return datetime.now(UTC)

    async def registry(self, conn: AsyncConnection, tenant_id: uuid.UUID) -> NodeRegistry:
        """Built-ins plus the tenant's webhook node types (cached per tenant for a few seconds).

        A cache miss reads the tenant's types on `conn`, the run's own connection: a run that waited for a second
        pooled connection while holding one could starve the pool under a burst (every run holding one, all
        waiting for another), which a test of sixty concurrent runs did.
        """
        on_this_connection = replace(self.deps, sessions=async_sessionmaker(bind=conn, expire_on_commit=False))
        return await registry_for(on_this_connection, tenant_id)

    async def graph(self, conn: AsyncConnection, flow_id: uuid.UUID, version_number: int) -> FlowGraph:
        """The parsed graph of a version."""
        return await self.graphs.get(conn, flow_id, version_number)

    async def instance_run(self, conn: AsyncConnection, instance: InstanceRow, now: datetime) -> InstanceRun:
        """A run of the locked `instance` on its version's graph and its tenant's registry."""
        graph = await self.graph(conn, instance.flow_id, instance.version_number)
        registry = await self.registry(conn, instance.tenant_id)
        return InstanceRun(conn, instance, graph, registry, self.settings, now, self.expressions)

    @asynccontextmanager
    async def transaction(self, effects: Effects) -> AsyncIterator[AsyncConnection]:
        """A transaction that runs instances (or changes them), gathering what to do in `effects`: the analytics
        counters it changed (`effects.tally`) are written as its last statement, just before it commits (and then
        cleared, so `effects` may gather another transaction's); its runs are counted for /metrics once it has
        committed (`effects.counts`). The caller calls `after_commit(effects)`."""
        async with self.db.begin() as conn:
            yield conn
            await write_tally(conn, effects.tally)
            effects.tally = Tally()
            counts, effects.counts = effects.counts, RunCounts()
        counts.record()

    async def after_commit(self, effects: Effects) -> None:
        """Tell the scheduler about committed timers, cancellations and deliveries; run event lookbacks."""
        from kalcifer_engine.runtime.events import resume_from_recent_events

        for _ in range(MAX_LOOKBACK_ROUNDS):
            if effects.timers:
                self.scheduler.arm(effects.timers)
            if effects.cancelled_timers:
                self.scheduler.cancel(effects.cancelled_timers)
            if effects.deliveries:
                self.scheduler.enqueue_deliveries(effects.deliveries)
            if not effects.event_waits:
                return
            effects = await resume_from_recent_events(self, effects.event_waits)
        if effects:
            _log.warning("event lookback chain cut short", event_waits=len(effects.event_waits))
