"""Analytics counters kept in the run transactions (`flow_counters`), and what keeping them needs.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

AnalyticsService answers from `flow_counters` (`kalcifer_common.analytics` says what each counter counts and
under which day and version), which the engine adds to in the transaction of what it counts; several shards per
key, so concurrent runs of one flow rarely wait on one row. Keeping them needs two facts per A/B assignment (the
version it was made on, the participant's first conversion since) and two lookups a run makes: whether the
instance converted before (`ix_conversions_instance_id`) and the participant's assignments in the flow
(`ix_ab_assignments_tenant_id_flow_id_participant_id`).

The upgrade fills the counters (shard 0) from the rows that exist, with the same rules: instances already pruned
are not counted. Only the engine writes the counters; the API reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# kalcifer_common.analytics.BUCKET_BOUNDS_US as of this revision (migrations import no application code).
_BUCKET_BOUNDS_US = ", ".join(str(round(1000 * 2 ** (i / 4))) for i in range(35 * 4 + 1))

_INSERT = "INSERT INTO flow_counters (flow_id, node_id, counter, day, version_number, label, shard, tenant_id, value)"

# Instances, by the day they entered and their version now: entered, one counter per status, converted.
_FILL_INSTANCES = f"""
    {_INSERT}
    SELECT s.flow_id, '', c.counter, s.day, s.version_number, '', 0, s.tenant_id, c.value
    FROM (
        SELECT i.flow_id, i.tenant_id, i.version_number, (i.enter_time AT TIME ZONE 'UTC')::date AS day,
               count(*) AS entered,
               count(*) FILTER (WHERE i.status = 'running') AS running,
               count(*) FILTER (WHERE i.status = 'waiting') AS waiting,
               count(*) FILTER (WHERE i.status = 'paused') AS paused,
               count(*) FILTER (WHERE i.status = 'completed') AS completed,
               count(*) FILTER (WHERE i.status = 'failed') AS failed,
               count(*) FILTER (WHERE i.status = 'exited') AS exited,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM conversions v WHERE v.instance_id = i.id)) AS converted
        FROM flow_instances i
        GROUP BY 1, 2, 3, 4
    ) s
    CROSS JOIN LATERAL (VALUES ('entered', s.entered), ('running', s.running), ('waiting', s.waiting),
                               ('paused', s.paused), ('completed', s.completed), ('failed', s.failed),
                               ('exited', s.exited), ('converted', s.converted)) AS c(counter, value)
    WHERE c.value <> 0
"""

# Steps, by the day they started and their version: entered (labelled with the node type), per status, per branch
# of the completed ones, per time bucket of those that ended completed, failed or skipped.
_FILL_STEPS = f"""
    WITH steps AS (
        SELECT i.flow_id, i.tenant_id, s.node_id, s.node_type, s.version_number, s.status,
               (s.start_time AT TIME ZONE 'UTC')::date AS day,
               CASE WHEN s.status = 'completed' AND jsonb_typeof(s.output -> 'branch') = 'string'
                    THEN s.output ->> 'branch' END AS branch,
               CASE WHEN s.status IN ('completed', 'failed', 'skipped') AND s.end_time IS NOT NULL
                    THEN width_bucket(
                        floor(extract(epoch FROM s.end_time - s.start_time) * 1000000)::bigint,
                        ARRAY[{_BUCKET_BOUNDS_US}]::bigint[]) END AS bucket
        FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
    )
    {_INSERT}
    SELECT flow_id, node_id, counter, day, version_number, label, 0, tenant_id, count(*)
    FROM (
        SELECT flow_id, tenant_id, node_id, day, version_number, 'step_entered' AS counter, node_type AS label
        FROM steps
        UNION ALL
        SELECT flow_id, tenant_id, node_id, day, version_number, 'step_' || status, '' FROM steps
        UNION ALL
        SELECT flow_id, tenant_id, node_id, day, version_number, 'step_branch', branch
        FROM steps WHERE branch IS NOT NULL
        UNION ALL
        SELECT flow_id, tenant_id, node_id, day, version_number, 'step_time', bucket::text
        FROM steps WHERE bucket IS NOT NULL
    ) counted
    GROUP BY flow_id, node_id, counter, day, version_number, label, tenant_id
"""

# Nodes reached: each instance once per node, by its enter day and the version of its first step there.
_FILL_REACHED = f"""
    {_INSERT}
    SELECT flow_id, node_id, 'reached', day, version_number, '', 0, tenant_id, count(*)
    FROM (
        SELECT DISTINCT ON (s.instance_id, s.node_id)
               i.flow_id, i.tenant_id, s.node_id, s.version_number, (i.enter_time AT TIME ZONE 'UTC')::date AS day
        FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
        ORDER BY s.instance_id, s.node_id, s.seq
    ) first_visits
    GROUP BY flow_id, node_id, day, version_number, tenant_id
"""

# Each assignment's version (of the participant's first step at the node, else the flow's active version) and first
# conversion since it was made.
_FILL_ASSIGNMENTS = """
    UPDATE ab_assignments a
    SET version_number = coalesce(
            (SELECT s.version_number FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
             WHERE i.tenant_id = a.tenant_id AND i.flow_id = a.flow_id AND i.participant_id = a.participant_id
               AND s.node_id = a.node_id
             ORDER BY s.seq LIMIT 1),
            (SELECT f.active_version_number FROM flows f WHERE f.id = a.flow_id),
            1),
        convert_time = (SELECT min(c.create_time) FROM conversions c
                        WHERE c.tenant_id = a.tenant_id AND c.flow_id = a.flow_id
                          AND c.participant_id = a.participant_id AND c.create_time >= a.create_time)
"""

# A/B variants, by the day of the assignment and its version: participants, converted participants, revenue.
_FILL_AB = f"""
    {_INSERT}
    SELECT s.flow_id, s.node_id, c.counter, s.day, s.version_number, s.variant_key, 0, s.tenant_id, c.value
    FROM (
        SELECT a.flow_id, a.tenant_id, a.node_id, a.variant_key, a.version_number,
               (a.create_time AT TIME ZONE 'UTC')::date AS day,
               count(*) AS participants,
               count(*) FILTER (WHERE a.convert_time IS NOT NULL) AS conversions,
               coalesce(sum((SELECT sum(c.revenue) FROM conversions c
                             WHERE c.tenant_id = a.tenant_id AND c.flow_id = a.flow_id
                               AND c.participant_id = a.participant_id AND c.create_time >= a.create_time)), 0)
                   AS revenue
        -- ab_assignments.flow_id is a plain reference: only assignments of flows that still exist are counted.
        FROM ab_assignments a JOIN flows f ON f.id = a.flow_id
        GROUP BY 1, 2, 3, 4, 5, 6
    ) s
    CROSS JOIN LATERAL (VALUES ('ab_participants', s.participants::numeric),
                               ('ab_conversions', s.conversions::numeric),
                               ('ab_revenue', s.revenue)) AS c(counter, value)
    WHERE c.value <> 0
"""


# In order: the assignments' facts before the A/B counters made from them.
FILL_STATEMENTS = (_FILL_INSTANCES, _FILL_STEPS, _FILL_REACHED, _FILL_ASSIGNMENTS, _FILL_AB)


def upgrade() -> None:
    """Create the counters, the assignment columns and both indexes; fill the counters; grant them."""
    op.create_table(
        "flow_counters",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("counter", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("value", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_counters_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "flow_id", "node_id", "counter", "day", "version_number", "label", "shard", name=op.f("pk_flow_counters")
        ),
    )
    op.add_column("ab_assignments", sa.Column("version_number", sa.Integer(), nullable=True))
    op.add_column("ab_assignments", sa.Column("convert_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_ab_assignments_tenant_id_flow_id_participant_id",
        "ab_assignments",
        ["tenant_id", "flow_id", "participant_id"],
        unique=False,
    )
    op.create_index("ix_conversions_instance_id", "conversions", ["instance_id"], unique=False)
    for statement in FILL_STATEMENTS:
        op.execute(statement)
    op.execute("GRANT SELECT, INSERT, UPDATE ON flow_counters TO kalcifer_engine")
    op.execute("GRANT SELECT ON flow_counters TO kalcifer_api")


def downgrade() -> None:
    """Drop the counters, the columns and the indexes (a later upgrade fills the counters again)."""
    op.drop_index("ix_conversions_instance_id", table_name="conversions")
    op.drop_index("ix_ab_assignments_tenant_id_flow_id_participant_id", table_name="ab_assignments")
    op.drop_column("ab_assignments", "convert_time")
    op.drop_column("ab_assignments", "version_number")
    op.drop_table("flow_counters")
