"""The scheduler's wait leases move out of `waits` into its own table, `wait_claims`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

The engine alone writes instances, steps and waits (SPEC 10); until now the scheduler set `waits.claim_until`
(a column-level grant). A claim is now a row of `wait_claims` (wait id -> claim_until) that only the scheduler
writes, removed with its wait. Live leases are carried over, so replicas running across the upgrade do not fire
a claimed wait twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create wait_claims, carry the live leases over, drop waits.claim_until, and grant the table."""
    op.create_table(
        "wait_claims",
        sa.Column("wait_id", sa.Uuid(), nullable=False),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["wait_id"], ["waits.id"], name=op.f("fk_wait_claims_wait_id_waits"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("wait_id", name=op.f("pk_wait_claims")),
    )
    op.execute(
        "INSERT INTO wait_claims (wait_id, claim_until) SELECT id, claim_until FROM waits "
        "WHERE claim_until IS NOT NULL AND status = 'pending'"
    )
    op.execute("REVOKE UPDATE (claim_until) ON waits FROM kalcifer_scheduler")
    op.drop_column("waits", "claim_until")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON wait_claims TO kalcifer_scheduler")
    op.execute("GRANT SELECT ON wait_claims TO kalcifer_engine, kalcifer_api")


def downgrade() -> None:
    """Put the leases back on waits."""
    op.add_column("waits", sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE waits w SET claim_until = c.claim_until FROM wait_claims c WHERE c.wait_id = w.id")
    op.execute("GRANT UPDATE (claim_until) ON waits TO kalcifer_scheduler")
    op.drop_table("wait_claims")
