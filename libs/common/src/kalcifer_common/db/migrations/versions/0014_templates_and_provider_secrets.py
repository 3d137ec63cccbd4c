"""Message templates, sealed provider secrets and when a delivery ended (SPEC 7, SPEC 10).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

- `templates`: a tenant's message templates, keyed by the id channel nodes name. The API writes them; the engine
  reads them (graph validation refuses a `template_id` that names none) and the scheduler reads them (it renders
  a delivery's template when it sends it).
- `provider_configs.secrets`: secret provider settings, each sealed with `KALCIFER_SECRET_KEY`
  (`kalcifer_common.secrets`); `settings` keeps only the plain ones. The API now writes `provider_configs`
  (ChannelService); the scheduler reads it.
- `deliveries.final_time`: when a delivery became delivered, bounced or failed. Delivery statuses keep one writer,
  the scheduler: the API relays provider reports (ReportDeliveryStatus) to it, so no grant changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHANNELS = "'email', 'sms', 'push', 'whatsapp', 'in_app', 'webhook'"


def upgrade() -> None:
    """Create templates, add the secrets and final_time columns, grant them."""
    op.create_table(
        "templates",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("body", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("html_body", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"channel IN ({_CHANNELS})", name=op.f("ck_templates_channel")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_templates_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_templates")),
    )
    op.add_column(
        "provider_configs",
        sa.Column(
            "secrets", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
    )
    op.add_column("deliveries", sa.Column("final_time", sa.DateTime(timezone=True), nullable=True))
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON templates TO kalcifer_api")
    op.execute("GRANT SELECT ON templates TO kalcifer_engine, kalcifer_scheduler")
    op.execute("GRANT INSERT, UPDATE, DELETE ON provider_configs TO kalcifer_api")


def downgrade() -> None:
    """Drop what upgrade added; the API reads provider_configs again without writing it."""
    op.execute("REVOKE INSERT, UPDATE, DELETE ON provider_configs FROM kalcifer_api")
    op.drop_column("deliveries", "final_time")
    op.drop_column("provider_configs", "secrets")
    op.drop_table("templates")
