"""What a node sees and may do while it runs: the `ctx` of `NodeType.execute` / `resume` (SPEC 6.1).

Nodes never touch the database or the network themselves (outbound calls park on a `call` wait). They
read the instance context and ask for effects; the runtime backs this protocol with SQL statements that join the
run's one transaction (deliveries, profile changes, conversions are committed together with the step), and unit
tests back it with an in-memory fake. Keeping nodes behind this seam is what makes a run atomic and a node
testable without PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from kalcifer_engine.nodes.governance import JourneyRules


class NodeContext(Protocol):
    """One node's view of one path of one instance, during one run."""

    @property
    def tenant_id(self) -> uuid.UUID:
        """The instance's tenant."""

    @property
    def flow_id(self) -> uuid.UUID:
        """The instance's flow."""

    @property
    def instance_id(self) -> uuid.UUID:
        """The instance."""

    @property
    def participant_id(self) -> str:
        """Who travels through the flow."""

    @property
    def node_id(self) -> str:
        """The graph id of the node being run."""

    @property
    def attempt(self) -> int:
        """1 for the first try of this node on this path, 2 for its first retry, ..."""

    @property
    def now(self) -> datetime:
        """The run's clock (timezone-aware UTC); nodes use it instead of reading the time themselves."""

    @property
    def data(self) -> Mapping[str, Any]:
        """The instance context: trigger context at the root, `customer`, `event`, `accumulated`, `_ids`."""

    def lookup(self, path: str) -> tuple[bool, Any]:
        """`(found, value)` of a dotted path in the context (`customer.attributes.tier`, `event.items.0.sku`),
        resolved by `kalcifer_common.comparisons.resolve`; `(False, None)` when the path does not resolve."""

    async def create_delivery(
        self,
        channel: str,
        template_id: str | None,
        payload: Mapping[str, Any],
        *,
        send_after: datetime | None = None,
    ) -> str:
        """Record a pending delivery on `channel` (sent later by the scheduler, not before `send_after`); returns
        its idempotency key, derived from instance, node and attempt, so a re-run of the same step never creates a
        second one."""

    async def update_profile(self, fields: Mapping[str, Any]) -> None:
        """Merge `fields` into the participant's customer attributes (creating the profile if needed); a null value
        removes the attribute, as UpsertCustomer does (`kalcifer_common.profiles`)."""

    async def add_tag(self, tag: str) -> None:
        """Add `tag` to the participant's customer tags (no duplicates)."""

    async def record_conversion(self, name: str, revenue: Decimal | None, *, kind: str = "conversion") -> None:
        """Record a conversion (`track_conversion`) or a goal (`goal_reached`, kind="goal")."""

    async def count_deliveries(self, channel: str, since: datetime) -> int:
        """Messages sent or scheduled on `channel` to this participant in this tenant created at or after `since`
        (all flows; failed deliveries do not count); `channel` "any" counts every channel. The count holds until
        the run commits: concurrent sends to the same participant wait for it."""

    async def sticky_variant(self, variants: Sequence[tuple[str, float]]) -> str:
        """The participant's variant at this node of this flow: assigned once by weight, the same ever after."""

    async def in_segment(self, segment_id: str) -> bool:
        """Whether the participant's profile matches the tenant's segment `segment_id` (False if unknown)."""

    async def preference(self, channel: str) -> bool:
        """Whether the participant accepts messages on `channel` (true unless their preferences say false)."""

    async def recipient(self) -> Mapping[str, Any] | None:
        """The participant's customer profile as stored now (email, phone, timezone, preferences, ...), or None."""

    async def journey_rules(self) -> JourneyRules | None:
        """The governance of the journey wrapping this flow (frequency cap, quiet hours), or None."""

    async def evaluate(self, expression: str, extra: Mapping[str, Any] | None = None) -> Any:
        """Evaluate a CEL expression over the context (plus `extra`, e.g. `event`) within its time and memory
        budget; raises `ValueError` (`ExpressionRunaway` when the budget stopped it)."""

    async def render(self, templates: Any) -> Any:
        """`templates` (a JSON value) with every templated string rendered over the context: Jinja2, sandboxed,
        strict undefined, within the sandbox's budget; raises `ValueError` saying which template failed."""
