"""segment_entry follows membership incrementally: per-entry cursors, per-entry members, customers by update time.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

The scheduler evaluated every customer of the tenant for every `segment_entry` flow each minute and started the
members who had no live instance, so a member re-entered each minute once their instance ended. Now it keeps, per
entry node, who is a member (`segment_entry_members`) and how far it has read the tenant's customers in
(update_time, id) order (`segment_entry_cursors`); a run reads only the customers changed since, through
`ix_customers_tenant_id_update_time_id`, and enters those who became members. Both tables are the scheduler's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the customers index and both tables, and grant the tables."""
    op.create_index(
        "ix_customers_tenant_id_update_time_id", "customers", ["tenant_id", "update_time", "id"], unique=False
    )
    op.create_table(
        "segment_entry_cursors",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("segment_revision", sa.Integer(), nullable=False),
        sa.Column("read_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_customer_id", sa.Uuid(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(read_update_time IS NULL) = (read_customer_id IS NULL)", name=op.f("ck_segment_entry_cursors_read_pair")
        ),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_segment_entry_cursors_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_segment_entry_cursors_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "node_id", name=op.f("pk_segment_entry_cursors")),
    )
    op.create_index("ix_segment_entry_cursors_tenant_id", "segment_entry_cursors", ["tenant_id"], unique=False)
    op.create_table(
        "segment_entry_members",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("join_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("join_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("start_pending", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_segment_entry_members_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["flow_id", "node_id"],
            ["segment_entry_cursors.flow_id", "segment_entry_cursors.node_id"],
            name=op.f("fk_segment_entry_members_flow_id_segment_entry_cursors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_segment_entry_members_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "node_id", "customer_id", name=op.f("pk_segment_entry_members")),
    )
    op.create_index("ix_segment_entry_members_customer_id", "segment_entry_members", ["customer_id"], unique=False)
    op.create_index("ix_segment_entry_members_tenant_id", "segment_entry_members", ["tenant_id"], unique=False)
    op.create_index(
        "ix_segment_entry_members_start_pending",
        "segment_entry_members",
        ["flow_id", "node_id", "join_time"],
        unique=False,
        postgresql_where=sa.text("start_pending"),
    )
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON segment_entry_cursors, segment_entry_members TO kalcifer_scheduler"
    )
    op.execute("GRANT SELECT ON segment_entry_cursors, segment_entry_members TO kalcifer_api, kalcifer_engine")


def downgrade() -> None:
    """Drop both tables and the index (a later upgrade evaluates every customer once again)."""
    op.drop_table("segment_entry_members")
    op.drop_table("segment_entry_cursors")
    op.drop_index("ix_customers_tenant_id_update_time_id", table_name="customers")
