"""Indexes for ListInstances: a tenant's instances newest first, overall and per flow.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

ListInstances pages newest first on (enter_time, id). Without these, a page of a tenant (or flow) with millions of
instances sorts all of them; with them, PostgreSQL walks the index backwards and stops after one page.
`enter_time` never changes after insert, so the indexes cost the engine's hot path one entry per new instance.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create both list indexes."""
    op.create_index(
        "ix_flow_instances_tenant_id_enter_time_id", "flow_instances", ["tenant_id", "enter_time", "id"], unique=False
    )
    op.create_index(
        "ix_flow_instances_tenant_id_flow_id_enter_time_id",
        "flow_instances",
        ["tenant_id", "flow_id", "enter_time", "id"],
        unique=False,
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_flow_instances_tenant_id_flow_id_enter_time_id", table_name="flow_instances")
    op.drop_index("ix_flow_instances_tenant_id_enter_time_id", table_name="flow_instances")
