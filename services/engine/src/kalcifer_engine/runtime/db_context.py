"""The real `NodeContext`: what a node sees and does, backed by the run's one transaction (SPEC 6.1, 6.3).

Every effect a node asks for (a delivery, a profile change, a tag, a conversion, a sticky variant) is a `repo`
statement on the run's connection, so it commits together with the step that asked for it or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from kalcifer_common import comparisons
from kalcifer_common.profiles import merged_attributes
from kalcifer_common.sandbox import ExpressionSandbox
from kalcifer_common.segments import matches
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import Assignment, Cohort, Tally
from kalcifer_engine.domain.variants import weighted_choice
from kalcifer_engine.nodes.governance import JourneyRules
from kalcifer_engine.repo import customers, deliveries, journeys
from kalcifer_engine.repo.instances import InstanceRow


@dataclass
class RunScope:
    """One run of one instance: its transaction, identity, clock and the context the nodes share."""

    conn: AsyncConnection
    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    instance_id: uuid.UUID
    participant_id: str
    now: datetime
    context: dict[str, Any]
    expressions: ExpressionSandbox
    # The instance's version, and where its flow counters are kept; what its nodes count goes to `tally`.
    version_number: int
    cohort: Cohort
    tally: Tally = field(default_factory=Tally)
    # Deliveries created by this run, handed to the scheduler's queue once the run commits.
    delivery_ids: list[uuid.UUID] = field(default_factory=list)
    # Read at most once per run: the stored profile (dropped when the run changes it) and the journey's rules.
    profile: list[dict[str, Any] | None] = field(default_factory=list)
    rules: list[JourneyRules | None] = field(default_factory=list)

    @classmethod
    def of(
        cls, conn: AsyncConnection, instance: InstanceRow, now: datetime, expressions: ExpressionSandbox
    ) -> RunScope:
        """The scope of a run of the locked `instance` at `now` (its context is shared, not copied)."""
        return cls(
            conn=conn,
            tenant_id=instance.tenant_id,
            flow_id=instance.flow_id,
            instance_id=instance.id,
            participant_id=instance.participant_id,
            now=now,
            context=instance.context,
            expressions=expressions,
            version_number=instance.version_number,
            cohort=instance.cohort(now),
        )


class DbNodeContext:
    """`NodeContext` for one node on one path, inside the run's transaction."""

    def __init__(self, scope: RunScope, node_id: str, attempt: int) -> None:
        self._scope = scope
        self._node_id = node_id
        self._attempt = attempt

    @property
    def tenant_id(self) -> uuid.UUID:
        """The instance's tenant."""
        return self._scope.tenant_id

    @property
    def flow_id(self) -> uuid.UUID:
        """The instance's flow."""
        return self._scope.flow_id

    @property
    def instance_id(self) -> uuid.UUID:
        """The instance."""
        return self._scope.instance_id

    @property
    def participant_id(self) -> str:
        """Who travels through the flow."""
        return self._scope.participant_id

    @property
    def node_id(self) -> str:
        """The graph id of the node being run."""
        return self._node_id

    @property
    def attempt(self) -> int:
        """1 for the first try of this node on this path, 2 for its first retry, ..."""
        return self._attempt

    @property
    def now(self) -> datetime:
        """The run's clock (timezone-aware UTC)."""
        return self._scope.now

    @property
    def data(self) -> Mapping[str, Any]:
        """The instance context."""
        return self._scope.context

    def lookup(self, path: str) -> tuple[bool, Any]:
        """`(found, value)` of a dotted path in the context (`kalcifer_common.comparisons.resolve`)."""
        return comparisons.lookup(self._scope.context, path)

    async def create_delivery(
        self,
        channel: str,
        template_id: str | None,
        payload: Mapping[str, Any],
        *,
        send_after: datetime | None = None,
    ) -> str:
        """A pending delivery in this run's transaction; its key is `<instance>:<node>:a<attempt>:v<visit>`."""
        scope = self._scope
        delivery_id, key = await deliveries.insert_delivery(
            scope.conn,
            tenant_id=scope.tenant_id,
            instance_id=scope.instance_id,
            node_id=self._node_id,
            participant_id=scope.participant_id,
            channel=channel,
            template_id=template_id,
            payload=payload,
            key_prefix=f"{scope.instance_id}:{self._node_id}:a{self._attempt}",
            now=scope.now,
            send_after=send_after,
        )
        if delivery_id is not None:
            scope.delivery_ids.append(delivery_id)
        return key

    async def update_profile(self, fields: Mapping[str, Any]) -> None:
        """Merge `fields` into the customer's attributes (and into `customer` in this run's context); a null value
        removes the attribute, as UpsertCustomer does."""
        scope = self._scope
        scope.profile.clear()
        await customers.merge_profile(scope.conn, scope.tenant_id, scope.participant_id, fields, scope.now)
        customer = scope.context.setdefault("customer", {"external_id": scope.participant_id})
        customer["attributes"] = merged_attributes(customer.get("attributes") or {}, fields)

    async def add_tag(self, tag: str) -> None:
        """Add `tag` to the customer's tags (and to `customer.tags` in this run's context)."""
        scope = self._scope
        scope.profile.clear()
        await customers.add_tag(scope.conn, scope.tenant_id, scope.participant_id, tag, scope.now)
        tags = scope.context.setdefault("customer", {"external_id": scope.participant_id}).setdefault("tags", [])
        if tag not in tags:
            tags.append(tag)

    async def record_conversion(self, name: str, revenue: Decimal | None, *, kind: str = "conversion") -> None:
        """Record a conversion or a reached goal (and count it)."""
        scope = self._scope
        recorded = await customers.insert_conversion(
            scope.conn,
            tenant_id=scope.tenant_id,
            instance_id=scope.instance_id,
            flow_id=scope.flow_id,
            participant_id=scope.participant_id,
            name=name,
            revenue=revenue,
            kind=kind,
            now=scope.now,
        )
        scope.tally.conversion_recorded(scope.cohort, recorded, revenue)

    async def count_deliveries(self, channel: str, since: datetime) -> int:
        """Deliveries on `channel` to this participant since `since` (all flows of the tenant)."""
        scope = self._scope
        return await deliveries.count_deliveries(scope.conn, scope.tenant_id, scope.participant_id, channel, since)

    async def sticky_variant(self, variants: Sequence[tuple[str, float]]) -> str:
        """The participant's variant at this node of this flow, assigned once by weight."""
        scope = self._scope
        candidate = weighted_choice(variants, f"{scope.flow_id}:{self._node_id}:{scope.participant_id}")
        variant, assigned_now = await customers.sticky_variant(
            scope.conn,
            scope.tenant_id,
            scope.flow_id,
            self._node_id,
            scope.participant_id,
            candidate,
            version_number=scope.version_number,
            now=scope.now,
        )
        if assigned_now:
            assignment = Assignment(self._node_id, variant, scope.version_number, scope.now)
            scope.tally.participant_assigned(scope.tenant_id, scope.flow_id, assignment)
        return variant

    async def in_segment(self, segment_id: str) -> bool:
        """Whether the participant's stored profile matches the segment (False for an unknown segment)."""
        scope = self._scope
        segment = await customers.segment_rules(scope.conn, scope.tenant_id, segment_id)
        if segment is None:
            return False
        profile = await self.recipient()
        return matches(segment[1], segment[0], profile or {"external_id": scope.participant_id})

    async def preference(self, channel: str) -> bool:
        """True unless the customer's preferences say false for `channel`."""
        preferences = (await self.recipient() or {}).get("preferences") or {}
        return not isinstance(preferences, Mapping) or preferences.get(channel) is not False

    async def recipient(self) -> Mapping[str, Any] | None:
        """The stored customer profile, read once per run (again after this run changed it)."""
        scope = self._scope
        if not scope.profile:
            scope.profile.append(await customers.customer_profile(scope.conn, scope.tenant_id, scope.participant_id))
        return scope.profile[0]

    async def journey_rules(self) -> JourneyRules | None:
        """The governance of the journey wrapping the flow, read once per run."""
        scope = self._scope
        if not scope.rules:
            row = await journeys.governance_of_flow(scope.conn, scope.tenant_id, scope.flow_id)
            scope.rules.append(
                None if row is None else JourneyRules.from_row(str(row.journey_id), row.frequency_cap, row.quiet_hours)
            )
        return scope.rules[0]

    async def evaluate(self, expression: str, extra: Mapping[str, Any] | None = None) -> Any:
        """Evaluate a CEL expression over the context (plus `extra`) in the expression sandbox."""
        variables = dict(self._scope.context)
        if extra:
            variables.update(extra)
        return await self._scope.expressions.evaluate(expression, variables)

    async def render(self, templates: Any) -> Any:
        """Render the templated strings of `templates` over the context in the expression sandbox."""
        return await self._scope.expressions.render(templates, self._scope.context)
