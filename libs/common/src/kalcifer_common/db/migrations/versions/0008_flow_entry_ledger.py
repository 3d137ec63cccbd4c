"""The entry ledger: one row per (flow, participant) that ever entered, never pruned.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

`RE_ENTRY_POLICY_NEVER` was enforced by looking for the participant's old instances, which the engine prunes after
`INSTANCE_RETENTION_SECONDS`; after that the participant could enter again. The engine now writes a ledger row
with the first instance and checks the ledger. Existing instances seed it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create flow_entries, seed it from the instances, grant it."""
    op.create_table(
        "flow_entries",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("first_enter_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_entries_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_flow_entries_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "participant_id", name=op.f("pk_flow_entries")),
    )
    op.create_index("ix_flow_entries_tenant_id", "flow_entries", ["tenant_id"], unique=False)
    op.execute(
        "INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time) "
        "SELECT flow_id, participant_id, tenant_id, min(enter_time) FROM flow_instances "
        "GROUP BY flow_id, participant_id, tenant_id"
    )
    op.execute("GRANT SELECT, INSERT ON flow_entries TO kalcifer_engine")
    op.execute("GRANT SELECT ON flow_entries TO kalcifer_api, kalcifer_scheduler")


def downgrade() -> None:
    """Drop the ledger (NEVER falls back to looking for old instances)."""
    op.drop_index("ix_flow_entries_tenant_id", table_name="flow_entries")
    op.drop_table("flow_entries")
