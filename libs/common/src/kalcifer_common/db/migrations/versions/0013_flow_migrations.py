"""MIGRATE_ALL as a durable job: `flow_migrations`, worked in bounded batches by any engine replica.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

A migration of a flow with a million live instances cannot fit in one call: MigrateInstances records the job,
moves a first batch within its deadline and answers `in_progress`; the engines' recovery loop goes on, one batch
at a time under a lease, from the last instance id moved. GetMigrationStatus reads the job's progress.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create flow_migrations; the engine owns it, the API reads it."""
    op.create_table(
        "flow_migrations",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("from_version_number", sa.Integer(), nullable=False),
        sa.Column("to_version_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("migrated", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("exited", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "failures", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("failed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("after_instance_id", sa.Uuid(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('running', 'done')", name=op.f("ck_flow_migrations_status")),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_migrations_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_flow_migrations_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_migrations")),
    )
    op.create_index(
        "uq_flow_migrations_running_flow",
        "flow_migrations",
        ["flow_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_flow_migrations_flow_id_create_time", "flow_migrations", ["flow_id", "create_time"])
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON flow_migrations TO kalcifer_engine")
    op.execute("GRANT SELECT ON flow_migrations TO kalcifer_api")


def downgrade() -> None:
    """Drop it."""
    op.drop_table("flow_migrations")
