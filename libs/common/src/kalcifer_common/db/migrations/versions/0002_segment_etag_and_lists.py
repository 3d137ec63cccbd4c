"""Segments get a description and an etag source; indexes for ListSegments and tag-filtered ListCustomers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

`segments.revision` is bumped by every update (like flows and journeys) and is the segment's etag;
`segments.description` is the free text of `Segment.description`. ListSegments pages newest first on
(tenant_id, create_time, id); ListCustomers filtered by tag uses a GIN index on the tags array.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the segment columns and the two list indexes."""
    op.add_column("segments", sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False))
    op.add_column("segments", sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_index(
        "ix_segments_tenant_id_create_time_id", "segments", ["tenant_id", "create_time", "id"], unique=False
    )
    op.create_index("ix_customers_tags", "customers", ["tags"], unique=False, postgresql_using="gin")


def downgrade() -> None:
    """Remove what `upgrade` added."""
    op.drop_index("ix_customers_tags", table_name="customers", postgresql_using="gin")
    op.drop_index("ix_segments_tenant_id_create_time_id", table_name="segments")
    op.drop_column("segments", "revision")
    op.drop_column("segments", "description")
