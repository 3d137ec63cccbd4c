"""A goal counts once per instance: a partial unique index on conversions (instance_id, name) for goals.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

A journey's goal event and a `goal_reached` node may both reach the same goal of an instance; the second insert
does nothing (`ON CONFLICT DO NOTHING` on this index). Duplicates recorded before this revision are removed first,
keeping the earliest of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Drop duplicate goals, then create uq_conversions_goal_once."""
    op.execute(
        """
        DELETE FROM conversions c USING conversions d
        WHERE c.kind = 'goal' AND d.kind = 'goal' AND c.instance_id = d.instance_id AND c.name = d.name
          AND (d.create_time, d.id) < (c.create_time, c.id)
        """
    )
    op.create_index(
        "uq_conversions_goal_once",
        "conversions",
        ["instance_id", "name"],
        unique=True,
        postgresql_where=sa.text("kind = 'goal'"),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index("uq_conversions_goal_once", table_name="conversions")
