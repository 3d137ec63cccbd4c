"""The whole data model, as SQLAlchemy 2.0 typed declarative classes.

PostgreSQL is the source of truth for everything, so these tables carry the invariants that must hold across
replicas (a participant's single live instance, one active version per flow, one delivery per idempotency key)
as constraints rather than application checks. Status-like columns are plain strings checked against the
`*_STATUSES` tuples below (cheaper to evolve than PostgreSQL enums). Alembic migrations under `migrations/`
create exactly this schema; `tests/integration/test_migrations.py` proves they agree.

Defaults live in the database (`server_default`) so Core inserts on the engine's hot paths get them too; every
mapper uses `eager_defaults=True`, so ORM inserts and updates read them back with RETURNING instead of a lazy
load (which async sessions forbid).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column

from kalcifer_common.channels import CHANNELS, PROVIDERS
from kalcifer_common.statuses import (
    LIVE_INSTANCE_STATUSES,
    DeliveryStatus,
    FlowStatus,
    FlowVersionStatus,
    InstanceStatus,
    JourneyStatus,
    StepStatus,
    WaitKind,
    WaitStatus,
)

# Stable constraint and index names, so migrations written today still match the models tomorrow.
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

FLOW_STATUSES: Final = tuple(FlowStatus)
FLOW_VERSION_STATUSES: Final = tuple(FlowVersionStatus)
JOURNEY_STATUSES: Final = tuple(JourneyStatus)
RE_ENTRY_POLICIES: Final = ("after_exit", "never", "always")
INSTANCE_STATUSES: Final = tuple(InstanceStatus)
STEP_STATUSES: Final = tuple(StepStatus)
WAIT_KINDS: Final = tuple(WaitKind)
WAIT_STATUSES: Final = tuple(WaitStatus)
DELIVERY_STATUSES: Final = tuple(DeliveryStatus)
SEGMENT_MATCHES: Final = ("all", "any")
CONVERSION_KINDS: Final = ("conversion", "goal")
NODE_CATEGORIES: Final = ("trigger", "condition", "wait", "action", "end")


class Base(DeclarativeBase):
    """Declarative base of every Kalcifer table; `Base.metadata` is what Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSONB, list[Any]: JSONB}
    # Inherited by every model; one that sets its own __mapper_args__ must repeat this.
    __mapper_args__: Any = {"eager_defaults": True}


# --- column helpers -------------------------------------------------------------------------------------------


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """CHECK (column IN (...)), named `ck_<table>_<column>`."""
    return CheckConstraint(f"{column} IN ({_sql_list(values)})", name=column)


def _id() -> MappedColumn[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid.uuid4, server_default=text("gen_random_uuid()"))


def _tenant_id() -> MappedColumn[uuid.UUID]:
    return mapped_column(Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


def _created() -> MappedColumn[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> MappedColumn[datetime]:
    # onupdate applies to ORM flushes and to Core update() statements that do not set the column themselves.
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())


def _optional_time() -> MappedColumn[datetime | None]:
    return mapped_column(DateTime(timezone=True), nullable=True)


def _revision(table: str) -> MappedColumn[int]:
    # The etag source: bumped by every UPDATE that does not set it explicitly (ORM or Core).
    return mapped_column(
        Integer, nullable=False, server_default=text("1"), onupdate=literal_column(f"{table}.revision") + 1
    )


def _json(default: str) -> MappedColumn[Any]:
    return mapped_column(JSONB, nullable=False, server_default=text(f"'{default}'::jsonb"))


def _optional_json() -> MappedColumn[Any]:
    return mapped_column(JSONB, nullable=True)


def _text_default(value: str) -> MappedColumn[str]:
    return mapped_column(Text, nullable=False, server_default=text(f"'{value}'"))


# --- tenants and keys -----------------------------------------------------------------------------------------


class Tenant(Base):
    """An isolated customer of Kalcifer; every other row belongs to one and is deleted with it."""

    __tablename__ = "tenants"
    __table_args__ = (CheckConstraint("btrim(name) <> ''", name="name_not_empty"),)

    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class ApiKey(Base):
    """A tenant's API key, stored only as the SHA-256 of the raw key; revoked keys stay for the audit trail."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash_is_sha256_hex"),
        Index("ix_api_keys_tenant_id_create_time_id", "tenant_id", "create_time", "id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    name: Mapped[str] = _text_default("")
    key_hash: Mapped[str] = mapped_column(CHAR(64), nullable=False, unique=True)
    key_prefix: Mapped[str] = mapped_column(Text, nullable=False)
    create_time: Mapped[datetime] = _created()
    revoke_time: Mapped[datetime | None] = _optional_time()
    last_used_time: Mapped[datetime | None] = _optional_time()


# --- the flow core --------------------------------------------------------------------------------------------


class Flow(Base):
    """A flow definition: its lifecycle, the version new instances run, and its re-entry policy."""

    __tablename__ = "flows"
    __table_args__ = (
        _one_of("status", FLOW_STATUSES),
        _one_of("re_entry", RE_ENTRY_POLICIES),
        # ListFlows filtered by status, keyset-paginated on (create_time, id).
        Index("ix_flows_tenant_id_status_create_time_id", "tenant_id", "status", "create_time", "id"),
        # ListFlows without a status filter.
        Index("ix_flows_tenant_id_create_time_id", "tenant_id", "create_time", "id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = _text_default("")
    status: Mapped[str] = _text_default("draft")
    active_version_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    re_entry: Mapped[str] = _text_default("after_exit")
    revision: Mapped[int] = _revision("flows")
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class FlowVersion(Base):
    """One immutable-once-published graph of a flow, numbered 1, 2, ... per flow."""

    __tablename__ = "flow_versions"
    __table_args__ = (
        _one_of("status", FLOW_VERSION_STATUSES),
        CheckConstraint("version_number >= 1", name="version_number_positive"),
        UniqueConstraint("flow_id", "version_number"),
        # At most one active version per flow; supersede the old one before activating the new one.
        Index(
            "uq_flow_versions_flow_id_active",
            "flow_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_flow_versions_tenant_id", "tenant_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = _text_default("draft")
    graph: Mapped[dict[str, Any]] = _json("{}")
    changelog: Mapped[str] = _text_default("")
    create_time: Mapped[datetime] = _created()
    publish_time: Mapped[datetime | None] = _optional_time()


class FlowInstance(Base):
    """One participant's trip through one version of a flow; the row every run is serialized through."""

    __tablename__ = "flow_instances"
    __table_args__ = (
        _one_of("status", INSTANCE_STATUSES),
        CheckConstraint("run_revision >= 0", name="run_revision_not_negative"),
        # The "one live instance per participant and flow" rule, enforced across replicas by the database.
        # Flows whose re-entry policy allows concurrent instances insert with exclusive = false.
        Index(
            "uq_flow_instances_live_participant",
            "tenant_id",
            "flow_id",
            "participant_id",
            unique=True,
            postgresql_where=text(f"exclusive AND status IN ({_sql_list(LIVE_INSTANCE_STATUSES)})"),
        ),
        # ListInstances by flow and status; GetMigrationStatus.
        Index("ix_flow_instances_tenant_id_flow_id_status", "tenant_id", "flow_id", "status"),
        # ListInstances by participant; event routing to a participant's instances.
        Index("ix_flow_instances_tenant_id_participant_id", "tenant_id", "participant_id"),
        # ListInstances newest first (keyset on enter_time, id), for the tenant and for one flow.
        Index("ix_flow_instances_tenant_id_enter_time_id", "tenant_id", "enter_time", "id"),
        Index("ix_flow_instances_tenant_id_flow_id_enter_time_id", "tenant_id", "flow_id", "enter_time", "id"),
        # Crash recovery: running instances whose lease expired were interrupted mid-run.
        Index("ix_flow_instances_status_lease_until", "status", "lease_until"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id"), nullable=False)
    version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = _text_default("running")
    exclusive: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    current_nodes: Mapped[list[Any]] = _json("[]")
    context: Mapped[dict[str, Any]] = _json("{}")
    exit_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_revision: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    lease_until: Mapped[datetime | None] = _optional_time()
    enter_time: Mapped[datetime] = _created()
    end_time: Mapped[datetime | None] = _optional_time()
    update_time: Mapped[datetime] = _updated()


class FlowEntry(Base):
    """The entry ledger: a participant entered a flow (SPEC 4, re-entry). One compact row per (flow, participant),
    written with the participant's first instance and never pruned, so `RE_ENTRY_POLICY_NEVER` holds after their
    instances are gone."""

    __tablename__ = "flow_entries"
    __table_args__ = (Index("ix_flow_entries_tenant_id", "tenant_id"),)

    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True)
    participant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    first_enter_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ExecutionStep(Base):
    """The record of one node run (or attempt) within an instance, in execution order (`seq`)."""

    __tablename__ = "execution_steps"
    __table_args__ = (
        _one_of("status", STEP_STATUSES),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        # ListExecutionSteps: an instance's steps in the order they ran.
        Index("ix_execution_steps_instance_id_seq", "instance_id", "seq"),
        Index("ix_execution_steps_tenant_id", "tenant_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    instance_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("flow_instances.id", ondelete="CASCADE"), nullable=False
    )
    # One global identity orders steps: an instance's runs are serialized, so its steps get increasing values.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), nullable=False)
    node_id: Mapped[str] = mapped_column(Text, nullable=False)
    node_type: Mapped[str] = mapped_column(Text, nullable=False)
    version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = _text_default("running")
    input: Mapped[dict[str, Any]] = _json("{}")
    output: Mapped[Any] = _optional_json()
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    start_time: Mapped[datetime] = _created()
    end_time: Mapped[datetime | None] = _optional_time()


class Wait(Base):
    """A path of an instance parked on a timer, an event or an outbound call; its id is the scheduler's job id.

    The row is the truth about a timer: the Redis job only makes it fire on time, the sweep catches the rest.
    """

    __tablename__ = "waits"
    __table_args__ = (
        _one_of("kind", WAIT_KINDS),
        _one_of("status", WAIT_STATUSES),
        CheckConstraint("kind <> 'timer' OR fire_time IS NOT NULL", name="timer_has_fire_time"),
        CheckConstraint("kind <> 'event' OR event_type IS NOT NULL", name="event_has_event_type"),
        CheckConstraint("kind <> 'call' OR fire_time IS NOT NULL", name="call_has_fire_time"),
        # The scheduler's sweep and horizon arming: pending timers (and event timeouts) by fire time. Partial, so
        # the index holds only what is still to fire however many waits have been resolved.
        Index(
            "ix_waits_pending_fire_time",
            "fire_time",
            postgresql_where=text("status = 'pending' AND fire_time IS NOT NULL"),
        ),
        # Event routing: which of this participant's paths wait for this event type.
        Index(
            "ix_waits_pending_event",
            "tenant_id",
            "participant_id",
            "event_type",
            postgresql_where=text("status = 'pending' AND kind = 'event'"),
        ),
        Index("ix_waits_instance_id", "instance_id"),
        Index("ix_waits_tenant_id", "tenant_id"),
        # Recovery: waits keeping an event that arrived while their flow was paused (few, and found at once).
        Index(
            "ix_waits_pending_held_event",
            "instance_id",
            postgresql_where=text("status = 'pending' AND branch_path ? 'held_event'"),
        ),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    instance_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("flow_instances.id", ondelete="CASCADE"), nullable=False
    )
    node_id: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = _text_default("pending")
    fire_time: Mapped[datetime | None] = _optional_time()
    event_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    event_filter: Mapped[str | None] = mapped_column(Text, nullable=True)
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    branch_path: Mapped[Any] = _optional_json()
    create_time: Mapped[datetime] = _created()
    resolved_time: Mapped[datetime | None] = _optional_time()


class WaitClaim(Base):
    """The scheduler replica firing a due wait holds it until `claim_until` (a lease; see the scheduler's
    timers/claims.py). The scheduler's own table: the engine alone writes `waits`."""

    __tablename__ = "wait_claims"

    wait_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("waits.id", ondelete="CASCADE"), primary_key=True)
    claim_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Event(Base):
    """An ingested participant event, kept for audit and deduplicated by the caller's request id."""

    __tablename__ = "events"
    __table_args__ = (
        # NULL request ids are distinct, so events without one are never deduplicated.
        UniqueConstraint("tenant_id", "request_id"),
        Index(
            "ix_events_tenant_id_participant_id_event_type_received_time",
            "tenant_id",
            "participant_id",
            "event_type",
            "received_time",
        ),
        # The engine's recovery: events stored but never routed (the engine died before routing them).
        Index("ix_events_unrouted_received_time", "received_time", postgresql_where=text("routed_time IS NULL")),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = _json("{}")
    occurred_at: Mapped[datetime] = _created()
    received_time: Mapped[datetime] = _created()
    request_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set by the transaction that routed the event; `route_result` is its answer, replayed on a repeat.
    routed_time: Mapped[datetime | None] = _optional_time()
    route_result: Mapped[Any] = _optional_json()


class NodeType(Base):
    """A tenant-registered node type backed by an HTTPS webhook, validated like a built-in."""

    __tablename__ = "node_types"
    __table_args__ = (
        _one_of("category", NODE_CATEGORIES),
        CheckConstraint("timeout_ms > 0", name="timeout_ms_positive"),
        UniqueConstraint("tenant_id", "key"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    key: Mapped[str] = mapped_column(Text, nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = _text_default("")
    config_schema: Mapped[dict[str, Any]] = _json("{}")
    branches: Mapped[list[Any]] = _json("[]")
    resumable: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    endpoint_url: Mapped[str] = mapped_column(Text, nullable=False)
    timeout_ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("5000"))
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class IdempotencyRecord(Base):
    """The stored response of a call made with a `request_id`, replayed when the same call is retried."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        CheckConstraint("request_hash ~ '^[0-9a-f]{64}$'", name="request_hash_is_sha256_hex"),
        # Maintenance deletes expired records.
        Index("ix_idempotency_records_expire_time", "expire_time"),
    )

    # A tenant id as text, or "admin" for operator calls that have no tenant.
    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    method: Mapped[str] = mapped_column(Text, primary_key=True)
    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(CHAR(64), nullable=False)
    response: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    create_time: Mapped[datetime] = _created()
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# --- the marketing layer --------------------------------------------------------------------------------------


class Segment(Base):
    """A named rule set over customer profiles (match all or any of the rules)."""

    __tablename__ = "segments"
    __table_args__ = (
        _one_of("match", SEGMENT_MATCHES),
        UniqueConstraint("tenant_id", "name"),
        # ListSegments, newest first, keyset-paginated on (create_time, id).
        Index("ix_segments_tenant_id_create_time_id", "tenant_id", "create_time", "id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = _text_default("")
    match: Mapped[str] = _text_default("all")
    rules: Mapped[list[Any]] = _json("[]")
    revision: Mapped[int] = _revision("segments")
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class Journey(Base):
    """A flow wrapped with marketing settings: audience, schedule, goals, exit criteria, caps, quiet hours."""

    __tablename__ = "journeys"
    __table_args__ = (
        _one_of("status", JOURNEY_STATUSES),
        _one_of("re_entry", RE_ENTRY_POLICIES),
        Index("ix_journeys_tenant_id_status_create_time_id", "tenant_id", "status", "create_time", "id"),
        Index("ix_journeys_tenant_id_create_time_id", "tenant_id", "create_time", "id"),
        Index("ix_journeys_flow_id", "flow_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id"), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = _text_default("")
    status: Mapped[str] = _text_default("draft")
    audience_segment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("segments.id"), nullable=True)
    entry_schedule: Mapped[Any] = _optional_json()
    goals: Mapped[list[Any]] = _json("[]")
    exit_criteria: Mapped[list[Any]] = _json("[]")
    frequency_cap: Mapped[Any] = _optional_json()
    quiet_hours: Mapped[Any] = _optional_json()
    re_entry: Mapped[str] = _text_default("after_exit")
    revision: Mapped[int] = _revision("journeys")
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class Customer(Base):
    """A participant with a profile; `external_id` is the participant id flows see."""

    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        Index("ix_customers_tenant_id_create_time_id", "tenant_id", "create_time", "id"),
        # ListCustomers filtered by tag (`tags @> ARRAY[tag]`).
        Index("ix_customers_tags", "tags", postgresql_using="gin"),
        # segment_entry reads only the customers changed since its last run, keyset on (update_time, id).
        Index("ix_customers_tenant_id_update_time_id", "tenant_id", "update_time", "id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    external_id: Mapped[str] = mapped_column(Text, nullable=False)
    attributes: Mapped[dict[str, Any]] = _json("{}")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"))
    preferences: Mapped[dict[str, Any]] = _json("{}")
    timezone: Mapped[str | None] = mapped_column(Text, nullable=True)
    email: Mapped[str | None] = mapped_column(Text, nullable=True)
    phone: Mapped[str | None] = mapped_column(Text, nullable=True)
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class SegmentEntryCursor(Base):
    """How far the scheduler has followed a segment for one `segment_entry` node of an active flow: the segment
    (and its revision) the members were evaluated against, and the (update_time, id) of the tenant's customers
    read up to. The scheduler's own table (see its `entries/segment_entry.py`)."""

    __tablename__ = "segment_entry_cursors"
    __table_args__ = (
        CheckConstraint("(read_update_time IS NULL) = (read_customer_id IS NULL)", name="read_pair"),
        Index("ix_segment_entry_cursors_tenant_id", "tenant_id"),
    )

    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    # Not a foreign key: a deleted segment leaves the cursor (and its members) as they were.
    segment_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    segment_revision: Mapped[int] = mapped_column(Integer, nullable=False)
    # The last customer read, in (update_time, id) order; NULL: none yet, the next run reads every customer.
    read_update_time: Mapped[datetime | None] = _optional_time()
    read_customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    update_time: Mapped[datetime] = _updated()


class SegmentEntryMember(Base):
    """A customer who is a member of the segment of a `segment_entry` node, as the scheduler last read them: the
    row is inserted when they join (and enter), deleted when they leave (or their customer row is deleted)."""

    __tablename__ = "segment_entry_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["flow_id", "node_id"],
            ["segment_entry_cursors.flow_id", "segment_entry_cursors.node_id"],
            ondelete="CASCADE",
        ),
        # Keeps ON DELETE CASCADE from scanning the table for every deleted customer (and tenant).
        Index("ix_segment_entry_members_customer_id", "customer_id"),
        Index("ix_segment_entry_members_tenant_id", "tenant_id"),
        # Joins whose StartInstance is still owed (few, and found at once), oldest first.
        Index(
            "ix_segment_entry_members_start_pending",
            "flow_id",
            "node_id",
            "join_time",
            postgresql_where=text("start_pending"),
        ),
    )

    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    node_id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    # Names this join (a rejoin gets a new one): the StartInstance request id is `segment_entry:<flow>:<join_id>`.
    join_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, server_default=text("gen_random_uuid()"))
    join_time: Mapped[datetime] = _created()
    # True until the engine answered this join's StartInstance (started, or the participant was already in).
    start_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class Delivery(Base):
    """One message to send through a channel, created in the same transaction as the step that asked for it."""

    __tablename__ = "deliveries"
    __table_args__ = (
        _one_of("channel", CHANNELS),
        _one_of("status", DELIVERY_STATUSES),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # "The same delivery is never sent twice": the key derives from instance, node and attempt.
        UniqueConstraint("idempotency_key"),
        # The send queue takes tenants' turns: the tenants with unsent deliveries, and each one's oldest.
        Index(
            "ix_deliveries_unsent_tenant_id_create_time",
            "tenant_id",
            "create_time",
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
        # Frequency caps: how many messages this participant got on this channel within a window.
        Index(
            "ix_deliveries_tenant_id_participant_id_channel_create_time",
            "tenant_id",
            "participant_id",
            "channel",
            "create_time",
        ),
        # Provider status callbacks find the delivery by the provider's message id.
        Index(
            "ix_deliveries_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # Keeps ON DELETE SET NULL from scanning the table for every deleted instance.
        Index("ix_deliveries_instance_id", "instance_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    instance_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("flow_instances.id", ondelete="SET NULL"), nullable=True
    )
    node_id: Mapped[str] = mapped_column(Text, nullable=False)
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    template_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = _json("{}")
    status: Mapped[str] = _text_default("pending")
    idempotency_key: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    send_after: Mapped[datetime | None] = _optional_time()
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()
    sent_time: Mapped[datetime | None] = _optional_time()
    # When it became delivered, bounced or failed (a provider's report says when; else when the scheduler gave up).
    final_time: Mapped[datetime | None] = _optional_time()


class Conversion(Base):
    """A conversion (`track_conversion`) or a reached goal (`goal_reached`), for analytics."""

    __tablename__ = "conversions"
    __table_args__ = (
        _one_of("kind", CONVERSION_KINDS),
        # Analytics per flow over a time range.
        Index("ix_conversions_tenant_id_flow_id_create_time", "tenant_id", "flow_id", "create_time"),
        # A goal counts once per instance, however many goal events and goal_reached nodes reach it.
        Index("uq_conversions_goal_once", "instance_id", "name", unique=True, postgresql_where=text("kind = 'goal'")),
        # Whether an instance converted before (its first conversion is counted, `flow_counters`).
        Index("ix_conversions_instance_id", "instance_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    # Plain references, not foreign keys: analytics records outlive the instances they came from.
    instance_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    flow_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    revenue: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    kind: Mapped[str] = _text_default("conversion")
    create_time: Mapped[datetime] = _created()


class AbAssignment(Base):
    """The variant an `ab_split` node gave a participant, so they get the same one every time (sticky)."""

    __tablename__ = "ab_assignments"
    __table_args__ = (
        # A conversion finds the participant's assignments in its flow (to count it for their variants).
        Index("ix_ab_assignments_tenant_id_flow_id_participant_id", "tenant_id", "flow_id", "participant_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    node_id: Mapped[str] = mapped_column(Text, primary_key=True)
    participant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    variant_key: Mapped[str] = mapped_column(Text, nullable=False)
    create_time: Mapped[datetime] = _created()
    # The instance's version when the participant was assigned: their A/B counters are kept under it. NULL only for
    # an assignment an engine older than revision 0014 made (not counted).
    version_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The participant's first conversion in the flow since the assignment (counted once per variant).
    convert_time: Mapped[datetime | None] = _optional_time()


class FlowMigration(Base):
    """A MIGRATE_ALL of one flow to one version, worked in bounded batches by any engine replica under a lease;
    its counts are the progress GetMigrationStatus reports. At most one runs per flow."""

    __tablename__ = "flow_migrations"
    __table_args__ = (
        _one_of("status", ("running", "done")),
        Index("uq_flow_migrations_running_flow", "flow_id", unique=True, postgresql_where=text("status = 'running'")),
        Index("ix_flow_migrations_flow_id_create_time", "flow_id", "create_time"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    from_version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    to_version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = _text_default("running")
    migrated: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    exited: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    failures: Mapped[list[Any]] = _json("[]")
    failed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    after_instance_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    lease_until: Mapped[datetime | None] = _optional_time()
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class ProviderConfig(Base):
    """Which provider sends a tenant's messages on one channel, and its settings."""

    __tablename__ = "provider_configs"
    __table_args__ = (
        _one_of("channel", CHANNELS),
        _one_of("provider", PROVIDERS),
        UniqueConstraint("tenant_id", "channel"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant_id()
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    provider: Mapped[str] = _text_default("log")
    # The plain settings; the secret ones (kalcifer_common.channels) are never here but in `secrets`.
    settings: Mapped[dict[str, Any]] = _json("{}")
    # Secret settings by name, each sealed (kalcifer_common.secrets) for its tenant, channel and name.
    secrets: Mapped[dict[str, Any]] = _json("{}")
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


# --- message templates ----------------------------------------------------------------------------------------


class Template(Base):
    """A tenant's message template (SPEC 7), named by channel nodes' `template_id`; Jinja2 rendered at send time."""

    __tablename__ = "templates"
    __table_args__ = (_one_of("channel", CHANNELS),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    # Chosen by the tenant; ListTemplates pages through the primary key (tenant_id, id).
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str] = _text_default("")
    body: Mapped[str] = _text_default("")
    html_body: Mapped[str] = _text_default("")
    description: Mapped[str] = _text_default("")
    revision: Mapped[int] = _revision("templates")
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


# --- analytics ------------------------------------------------------------------------------------------------


class FlowCounter(Base):
    """One shard of one analytics counter of a flow (`kalcifer_common.analytics`): the engine adds to it in the
    transaction of what it counts; AnalyticsService sums the shards, so answers never scan instances or steps.
    Pruning instances and steps leaves counters as they are."""

    __tablename__ = "flow_counters"

    # Deleted with their flow (and so with their tenant); no foreign key to tenants, so no second index to keep.
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True)
    # The node whose steps, visits or A/B assignments are counted; '' for the flow's instances.
    node_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # What is counted (`kalcifer_common.analytics.Counter`, or an instance status).
    counter: Mapped[str] = mapped_column(Text, primary_key=True)
    # The UTC day the counted thing is kept under (see `kalcifer_common.analytics`).
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    version_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A branch key, an A/B variant, a time bucket, a node type; '' when the counter has none.
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # A count, or an amount (revenue).
    value: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
