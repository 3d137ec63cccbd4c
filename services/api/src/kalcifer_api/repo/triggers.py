"""Which flows an inbound webhook starts: a query over the active versions' graphs (JSONB) in PostgreSQL."""

from __future__ import annotations

import uuid

import orjson
from sqlalchemy import text

from kalcifer_api.domain.triggers import WebhookTarget
from kalcifer_api.repo.scoped import TenantScopedRepository

# One row per ACTIVE flow of the tenant whose active version has a webhook_entry node on the path: the first such
# node in graph order (a flow is started once per call even if two of its nodes share a path). The containment
# test lets PostgreSQL skip graphs without a matching node before unnesting any of them.
_WEBHOOK_TARGETS = text(
    """
    SELECT DISTINCT ON (f.id) f.id AS flow_id, node.value ->> 'id' AS node_id
    FROM flows AS f
    JOIN flow_versions AS v
      ON v.flow_id = f.id AND v.version_number = f.active_version_number AND v.tenant_id = f.tenant_id
    CROSS JOIN LATERAL jsonb_array_elements(
      CASE WHEN jsonb_typeof(v.graph -> 'nodes') = 'array' THEN v.graph -> 'nodes' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS node(value, position)
    WHERE f.tenant_id = :tenant_id
      AND f.status = 'active'
      AND v.graph -> 'nodes' @> CAST(:pattern AS jsonb)
      AND node.value ->> 'type' = 'webhook_entry'
      AND node.value -> 'config' ->> 'webhook_path' = :webhook_path
      AND jsonb_typeof(node.value -> 'id') = 'string'
    ORDER BY f.id, node.position
    """
)


class WebhookTargetRepository(TenantScopedRepository):
    """The calling tenant's flows that listen on a webhook path."""

    async def targets(self, webhook_path: str) -> list[WebhookTarget]:
        """Every ACTIVE flow whose active version has a `webhook_entry` on `webhook_path`, ordered by flow id."""
        pattern = orjson.dumps([{"type": "webhook_entry", "config": {"webhook_path": webhook_path}}]).decode()
        params = {"tenant_id": self.tenant_id, "pattern": pattern, "webhook_path": webhook_path}
        async with self._sessions() as session:
            rows = (await session.execute(_WEBHOOK_TARGETS, params)).all()
        return [WebhookTarget(flow_id=uuid.UUID(str(row.flow_id)), entry_node_id=str(row.node_id)) for row in rows]
