"""The database layer: engine and sessions, the data model, and migrations (PostgreSQL via asyncpg).

Services import from here; the submodules are `session`, `models`, `migrate` and `urls`.
"""

from kalcifer_common.db.migrate import (
    current_revision,
    current_revision_async,
    downgrade_to,
    head_revision,
    upgrade_to_head,
    upgrade_to_head_async,
)
from kalcifer_common.db.models import (
    AbAssignment,
    ApiKey,
    Base,
    Conversion,
    Customer,
    Delivery,
    Event,
    ExecutionStep,
    Flow,
    FlowEntry,
    FlowInstance,
    FlowVersion,
    IdempotencyRecord,
    Journey,
    NodeType,
    ProviderConfig,
    Segment,
    Template,
    Tenant,
    Wait,
    WaitClaim,
)
from kalcifer_common.db.session import create_engine, create_sessionmaker
from kalcifer_common.db.urls import to_async_url, to_sync_url, with_database

__all__ = [
    "AbAssignment",
    "ApiKey",
    "Base",
    "Conversion",
    "Customer",
    "Delivery",
    "Event",
    "ExecutionStep",
    "Flow",
    "FlowEntry",
    "FlowInstance",
    "FlowVersion",
    "IdempotencyRecord",
    "Journey",
    "NodeType",
    "ProviderConfig",
    "Segment",
    "Template",
    "Tenant",
    "Wait",
    "WaitClaim",
    "create_engine",
    "create_sessionmaker",
    "current_revision",
    "current_revision_async",
    "downgrade_to",
    "head_revision",
    "to_async_url",
    "to_sync_url",
    "upgrade_to_head",
    "upgrade_to_head_async",
    "with_database",
]
