"""The index the deliveries queue takes tenants' turns with.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30

The scheduler queues deliveries in turns across tenants (each tenant's oldest due ones first, at most a few per
tenant at a time), so one tenant's backlog never holds another's sends back. It walks the tenants that have
unsent deliveries and, per tenant, their oldest: both by this partial index on the unsent rows only. It replaces
the index of the oldest sweep, which read the pending rows across tenants by `send_after`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_deliveries_unsent_tenant_id_create_time"
_OLD_INDEX = "ix_deliveries_pending_send_after_create_time"


def upgrade() -> None:
    op.drop_index(_OLD_INDEX, table_name="deliveries")
    op.create_index(
        _INDEX,
        "deliveries",
        ["tenant_id", "create_time"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="deliveries")
    op.create_index(
        _OLD_INDEX,
        "deliveries",
        ["send_after", "create_time"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
