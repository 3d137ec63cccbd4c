"""The analytics counters (`flow_counters`, written by the engine), summed for the calling tenant.

Every answer is one index range of the counters' primary key (flow, node, counter, day, ...) per node asked
about, summed over shards, days and versions; nothing scans instances or steps. The flow (and the version, when
one is asked for) is checked first, in the same snapshot: another tenant's flow is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from kalcifer_common.analytics import FLOW_ITSELF, CounterName
from kalcifer_common.db.models import Flow, FlowCounter, FlowVersion
from kalcifer_common.errors import InvalidArgument, NotFound
from sqlalchemy import Table, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.domain.analytics import (
    AB_COUNTERS,
    NODE_COUNTERS,
    SUMMARY_COUNTERS,
    AbVariantRecord,
    AnalyticsScope,
    CounterSum,
    FlowGraphs,
    FlowSummary,
    FunnelStepRecord,
    NodeStatsRecord,
    ab_results,
    flow_summary,
    funnel,
    node_stats,
    unknown_node_violations,
)
from kalcifer_api.repo.scoped import TenantScopedRepository

_counters = cast(Table, FlowCounter.__table__)
_flows = cast(Table, Flow.__table__)
_versions = cast(Table, FlowVersion.__table__)


class AnalyticsRepository(TenantScopedRepository):
    """The calling tenant's analytics, one read-only snapshot per call."""

    async def flow_summary(self, scope: AnalyticsScope) -> FlowSummary:
        """GetFlowSummary."""
        async with self._sessions() as session:
            await self._require_scope(session, scope)
            return flow_summary(await self._sums(session, scope, SUMMARY_COUNTERS, node_ids=[FLOW_ITSELF]))

    async def node_stats(self, scope: AnalyticsScope) -> list[NodeStatsRecord]:
        """GetNodeStats."""
        async with self._sessions() as session:
            await self._require_scope(session, scope)
            return node_stats(await self._sums(session, scope, NODE_COUNTERS, node_ids=None))

    async def funnel(self, scope: AnalyticsScope, node_ids: Sequence[str]) -> list[FunnelStepRecord]:
        """GetFunnel; INVALID_ARGUMENT naming each node that is not in the flow (its version)."""
        async with self._sessions() as session:
            graphs = await self._graphs(session, scope)
            violations = unknown_node_violations(node_ids, graphs, scope.version_number)
            if violations:
                raise InvalidArgument(violations)
            return funnel(node_ids, await self._sums(session, scope, (CounterName.REACHED,), node_ids=node_ids))

    async def ab_results(self, scope: AnalyticsScope, node_id: str) -> list[AbVariantRecord]:
        """GetAbResults; INVALID_ARGUMENT when `node_id` is not an ab_split node of the flow (its version)."""
        async with self._sessions() as session:
            graphs = await self._graphs(session, scope)
            variants = graphs.ab_variants(node_id)
            if variants is None:
                where = f"version {scope.version_number}" if scope.version_number else "any version"
                raise InvalidArgument.single("node_id", f"{node_id!r} is not an ab_split node of {where} of the flow")
            return ab_results(variants, await self._sums(session, scope, AB_COUNTERS, node_ids=[node_id]))

    async def _require_scope(self, session: AsyncSession, scope: AnalyticsScope) -> None:
        """NOT_FOUND unless the flow is the caller's and has the version asked for."""
        version_exists = exists().where(
            _versions.c.flow_id == _flows.c.id, _versions.c.version_number == scope.version_number
        )
        row = (
            await session.execute(
                select(_flows.c.id, version_exists.label("has_version")).where(
                    _flows.c.tenant_id == self.tenant_id, _flows.c.id == scope.flow_id
                )
            )
        ).first()
        if row is None:
            raise NotFound("flow", str(scope.flow_id))
        if scope.version_number and not row.has_version:
            raise NotFound("flow version", f"{scope.flow_id}/versions/{scope.version_number}")

    async def _graphs(self, session: AsyncSession, scope: AnalyticsScope) -> FlowGraphs:
        """The graphs of the version asked for (all versions when 0), newest first; NOT_FOUND as `_require_scope`."""
        await self._require_scope(session, scope)
        query = (
            select(_versions.c.version_number, _versions.c.graph)
            .where(_versions.c.tenant_id == self.tenant_id, _versions.c.flow_id == scope.flow_id)
            .order_by(_versions.c.version_number.desc())
        )
        if scope.version_number:
            query = query.where(_versions.c.version_number == scope.version_number)
        rows = (await session.execute(query)).all()
        return FlowGraphs([(row.version_number, row.graph if isinstance(row.graph, dict) else {}) for row in rows])

    async def _sums(
        self,
        session: AsyncSession,
        scope: AnalyticsScope,
        counters: Sequence[str],
        *,
        node_ids: Sequence[str] | None,
    ) -> list[CounterSum]:
        """The counters of these nodes (None: every node, not the flow itself) in the scope, summed per node,
        counter and label."""
        c = _counters.c
        query: Any = (
            select(c.node_id, c.counter, c.label, func.sum(c.value).label("total"), func.max(c.day).label("last_day"))
            .where(c.tenant_id == self.tenant_id, c.flow_id == scope.flow_id, c.counter.in_(counters))
            .group_by(c.node_id, c.counter, c.label)
        )
        query = query.where(c.node_id != FLOW_ITSELF if node_ids is None else c.node_id.in_(node_ids))
        if scope.version_number:
            query = query.where(c.version_number == scope.version_number)
        if scope.first_day is not None:
            query = query.where(c.day >= scope.first_day)
        if scope.end_day is not None:
            query = query.where(c.day < scope.end_day)
        rows = (await session.execute(query)).all()
        return [CounterSum(row.node_id, row.counter, row.label, row.total, row.last_day) for row in rows]
