"""One PostgreSQL role per service, granted only what it owns or reads (SPEC 10).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Each service connects as (or `SET ROLE`s to, see `DATABASE_ROLE`) its own role, so a boundary between services
is enforced by the database, not only agreed in code: the engine alone writes instances, steps and waits; the
API writes tenants, flows, journeys, segments and customers and stores events; the scheduler updates deliveries
and leases waits (`waits.claim_until`, its only column there) and expires idempotency records. Everything else a
service needs it may only read.

Roles belong to the cluster, not to one database: they are created when missing (another database of the same
cluster may have made them) and never dropped; the grants are per database. The migrating user is made a member,
so it can hand each service its role with `SET ROLE`. A later migration that adds a table grants it here too.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

API, ENGINE, SCHEDULER = "kalcifer_api", "kalcifer_engine", "kalcifer_scheduler"
ROLES = (API, ENGINE, SCHEDULER)

# (role, privileges, tables): what each service may do, table by table. Anything not listed is refused.
GRANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        API,
        "SELECT, INSERT, UPDATE, DELETE",
        ("tenants", "api_keys", "flows", "flow_versions", "journeys", "segments", "customers", "idempotency_records"),
    ),
    (API, "SELECT, INSERT", ("events",)),
    (
        API,
        "SELECT",
        (
            "flow_instances",
            "execution_steps",
            "waits",
            "node_types",
            "deliveries",
            "conversions",
            "ab_assignments",
            "provider_configs",
        ),
    ),
    (
        ENGINE,
        "SELECT, INSERT, UPDATE, DELETE",
        (
            "flow_instances",
            "execution_steps",
            "waits",
            "node_types",
            "conversions",
            "ab_assignments",
            "idempotency_records",
        ),
    ),
    (ENGINE, "SELECT, INSERT, UPDATE", ("deliveries", "customers", "events")),
    (ENGINE, "SELECT", ("tenants", "flows", "flow_versions", "segments", "journeys")),
    (SCHEDULER, "SELECT, UPDATE", ("deliveries",)),
    (SCHEDULER, "SELECT, DELETE", ("idempotency_records",)),
    (
        SCHEDULER,
        "SELECT",
        (
            "tenants",
            "flows",
            "flow_versions",
            "flow_instances",
            "waits",
            "journeys",
            "segments",
            "customers",
            "provider_configs",
        ),
    ),
    (SCHEDULER, "UPDATE (claim_until)", ("waits",)),  # until 0007 moves the leases to wait_claims
)


def _create_role(role: str) -> None:
    # Concurrent migrations of two databases in one cluster may race to create the same role.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
                EXECUTE format('GRANT {role} TO %I', current_user);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )


def upgrade() -> None:
    """Create the roles when missing and grant each one its tables."""
    for role in ROLES:
        _create_role(role)
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    for role, privileges, tables in GRANTS:
        op.execute(f"GRANT {privileges} ON {', '.join(tables)} TO {role}")


def downgrade() -> None:
    """Revoke this database's grants; the roles stay (other databases of the cluster may use them)."""
    for role in ROLES:
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
