"""An in-memory `NodeContext` for node unit tests: records every effect, answers every question from its fields."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kalcifer_common import comparisons
from kalcifer_common.sandbox import evaluate_here
from kalcifer_common.sandbox.templating import render_here
from kalcifer_engine.domain.variants import weighted_choice
from kalcifer_engine.nodes.governance import JourneyRules

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@dataclass
class FakeContext:
    """Deterministic: sticky variants hash the participant; the clock is `now`; templates render in-process."""

    participant_id: str = "p-1"
    data: dict[str, Any] = field(default_factory=dict)
    now: datetime = NOW
    node_id: str = "n1"
    attempt: int = 1
    tenant_id: uuid.UUID = field(default_factory=uuid.uuid4)
    flow_id: uuid.UUID = field(default_factory=uuid.uuid4)
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    segments: set[str] = field(default_factory=set)
    refused_channels: set[str] = field(default_factory=set)
    delivery_counts: dict[str, int] = field(default_factory=dict)
    deliveries: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    send_afters: list[datetime | None] = field(default_factory=list)
    rules: JourneyRules | None = None
    tags: list[str] = field(default_factory=list)
    conversions: list[tuple[str, Decimal | None, str]] = field(default_factory=list)
    count_queries: list[tuple[str, datetime]] = field(default_factory=list)
    assigned: dict[str, str] = field(default_factory=dict)

    def lookup(self, path: str) -> tuple[bool, Any]:
        return comparisons.lookup(self.data, path)

    async def create_delivery(
        self,
        channel: str,
        template_id: str | None,
        payload: Mapping[str, Any],
        *,
        send_after: datetime | None = None,
    ) -> str:
        self.deliveries.append((channel, template_id, dict(payload)))
        self.send_afters.append(send_after)
        return f"{self.instance_id}:{self.node_id}:{self.attempt}"

    async def update_profile(self, fields: Mapping[str, Any]) -> None:
        self.profile.update(fields)

    async def add_tag(self, tag: str) -> None:
        if tag not in self.tags:
            self.tags.append(tag)

    async def record_conversion(self, name: str, revenue: Decimal | None, *, kind: str = "conversion") -> None:
        self.conversions.append((name, revenue, kind))

    async def count_deliveries(self, channel: str, since: datetime) -> int:
        self.count_queries.append((channel, since))
        return self.delivery_counts.get(channel, 0)

    async def sticky_variant(self, variants: Sequence[tuple[str, float]]) -> str:
        if self.participant_id not in self.assigned:
            seed = f"{self.flow_id}:{self.node_id}:{self.participant_id}"
            self.assigned[self.participant_id] = weighted_choice(variants, seed)
        return self.assigned[self.participant_id]

    async def in_segment(self, segment_id: str) -> bool:
        return segment_id in self.segments

    async def preference(self, channel: str) -> bool:
        return channel not in self.refused_channels

    async def recipient(self) -> Mapping[str, Any] | None:
        customer = self.data.get("customer")
        return customer if isinstance(customer, Mapping) else None

    async def journey_rules(self) -> JourneyRules | None:
        return self.rules

    async def evaluate(self, expression: str, extra: Mapping[str, Any] | None = None) -> Any:
        return evaluate_here(expression, {**self.data, **(extra or {})})

    async def render(self, templates: Any) -> Any:
        return render_here(templates, self.data)
