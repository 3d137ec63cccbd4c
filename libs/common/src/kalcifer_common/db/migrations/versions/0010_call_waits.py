"""Waits of kind `call`: a path parked on an outbound call the scheduler makes out of any run (SPEC 6.10).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

A call wait is due at once (its fire time is when it was parked), so the scheduler's timer machinery (Redis
buckets, the overdue sweep, claims with leases) finds it, and the claimer makes the call instead of a timer resume.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Allow kind 'call' (which needs a fire time)."""
    op.drop_constraint(op.f("ck_waits_kind"), "waits", type_="check")
    op.create_check_constraint(op.f("ck_waits_kind"), "waits", "kind IN ('timer', 'event', 'call')")
    op.create_check_constraint(op.f("ck_waits_call_has_fire_time"), "waits", "kind <> 'call' OR fire_time IS NOT NULL")


def downgrade() -> None:
    """Only timers and events again (fails while call waits exist)."""
    op.drop_constraint(op.f("ck_waits_call_has_fire_time"), "waits", type_="check")
    op.drop_constraint(op.f("ck_waits_kind"), "waits", type_="check")
    op.create_check_constraint(op.f("ck_waits_kind"), "waits", "kind IN ('timer', 'event')")
