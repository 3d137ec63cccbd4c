"""Waits get a claim lease: the scheduler replica that fires a due wait holds it until `claim_until`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

The scheduler's bucket jobs and overdue sweeps (any number of replicas) claim due waits with one conditional
UPDATE that sets `claim_until`; a wait claimed by a replica that died is taken again once the lease has passed.
Nullable with no default, so adding it rewrites nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add waits.claim_until."""
    op.add_column("waits", sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Remove waits.claim_until."""
    op.drop_column("waits", "claim_until")
