"""Events remember whether and how they were routed, so routing is idempotent and recovery finds unrouted ones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

`events.routed_time` is set in the transaction that routes the event (resumes and starts commit with it);
`events.route_result` is the answer of that routing, replayed to a repeated RouteEvent. The partial index lets
the engine's recovery find events that were stored but never routed (the engine died before routing them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the routing columns and the unrouted-events index."""
    op.add_column("events", sa.Column("routed_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("route_result", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index(
        "ix_events_unrouted_received_time",
        "events",
        ["received_time"],
        unique=False,
        postgresql_where=sa.text("routed_time IS NULL"),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index(
        "ix_events_unrouted_received_time", table_name="events", postgresql_where=sa.text("routed_time IS NULL")
    )
    op.drop_column("events", "route_result")
    op.drop_column("events", "routed_time")
