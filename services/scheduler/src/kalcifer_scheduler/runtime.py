"""Everything the scheduler's jobs, loops and RPCs share, built once by the composition root.

arq hands jobs one context dict; ours carries this typed object under `runtime` (see workers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from arq.connections import ArqRedis
from kalcifer_common.sandbox import ExpressionSandbox
from kalcifer_common.settings import SchedulerSettings
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.deliveries.queue import DeliveryQueue
from kalcifer_scheduler.deliveries.reports import StatusReports
from kalcifer_scheduler.deliveries.sender import DeliverySender
from kalcifer_scheduler.entries import ScheduledEntries
from kalcifer_scheduler.maintenance import Maintenance
from kalcifer_scheduler.outbound.calls import CallMaker
from kalcifer_scheduler.outbound.client import OutboundClient
from kalcifer_scheduler.stats import SchedulerStats
from kalcifer_scheduler.timers.firing import TimerFirer
from kalcifer_scheduler.timers.store import TimerStore
from kalcifer_scheduler.timers.sweep import WaitSweeper


@dataclass
class SchedulerRuntime:
    """The scheduler's collaborators."""

    settings: SchedulerSettings
    db: AsyncEngine
    redis: ArqRedis
    engine_channel: grpc.aio.Channel
    http: OutboundClient
    calls: CallMaker
    # The expression sandbox that renders message templates (closed at shutdown).
    templates: ExpressionSandbox
    stats: SchedulerStats
    timers: TimerStore
    firer: TimerFirer
    sweeper: WaitSweeper
    deliveries: DeliveryQueue
    delivery_sender: DeliverySender
    reports: StatusReports
    maintenance: Maintenance
    # Scheduled entries (flow_triggers); None until their collaborators exist.
    entries: ScheduledEntries | None = None
    # The connection pool of the scheduled entries' run-long lock (disposed at shutdown).
    entries_lock_db: AsyncEngine | None = None


def sweep_grace_seconds(settings: SchedulerSettings) -> float:
    """How overdue a wait must be before the sweep takes it from the Redis path: a few buckets and polls."""
    return min(
        settings.sweep_interval_seconds, max(0.2, 4 * settings.timer_bucket_seconds + 2 * settings.arq_poll_seconds)
    )
