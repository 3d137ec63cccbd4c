"""A partial index of the waits that keep an event held while their flow was paused.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

Recovery looks for them every pass (a ResumeFlowInstances cut off after releasing the instances would otherwise
leave them unapplied); they are few, so the index is small and the lookup costs nothing at a million waits.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ix_waits_pending_held_event."""
    op.create_index(
        "ix_waits_pending_held_event",
        "waits",
        ["instance_id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND branch_path ? 'held_event'"),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_waits_pending_held_event", table_name="waits")
