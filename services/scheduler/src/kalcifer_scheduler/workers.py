"""The arq side: one worker per queue of SPEC 2, in this process, each restarted if its loop dies.

Every job function catches its own failures (they are logged and counted) and returns normally: a failed arq
job keeps its result under the worker's default retention whatever the function says (arq issue #531), which
would block its job id. Results are never kept (`keep_result=0`) except the maintenance cron's, whose kept
result is what makes `unique=True` hold across replicas (the cron job id is `<name>:<run time>`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings
from arq.worker import Worker
from kalcifer_common.logging import get_logger

from kalcifer_scheduler.job_codec import JSON_JOBS
from kalcifer_scheduler.keys import DELAYED_RESUME_QUEUE, DELIVERIES_QUEUE, FLOW_TRIGGERS_QUEUE, MAINTENANCE_QUEUE
from kalcifer_scheduler.runtime import SchedulerRuntime

_log = get_logger(__name__)

# A unique cron job's result is kept this long so a replica whose clock lags cannot run the same slot again.
_CRON_RESULT_SECONDS = 3600


def _runtime(ctx: dict[str, Any]) -> SchedulerRuntime:
    runtime: SchedulerRuntime = ctx["runtime"]
    return runtime


async def fire_due_timers(ctx: dict[str, Any], bucket_ms: int) -> int:
    """delayed_resume: fire every timer due now (this bucket's and any stragglers'), earliest first."""
    try:
        return await _runtime(ctx).firer.fire_due()
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the sweep retries whatever this job could not fire
        _log.exception("timer bucket failed", bucket_ms=bucket_ms)
        return 0


async def send_delivery(ctx: dict[str, Any], delivery_id: str) -> str:
    """deliveries: send one delivery; a retryable failure is queued again in its turn once its backoff passed."""
    runtime = _runtime(ctx)
    try:
        outcome = await runtime.delivery_sender.send(delivery_id)
        runtime.deliveries.wake()  # this tenant's turn is free: its next delivery may be queued
        if outcome.status == "retry" and outcome.retry_at is not None:
            runtime.deliveries.wake_at(outcome.retry_at)
        return outcome.status
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the delivery stays pending/sending and the sweep re-enqueues it
        _log.exception("delivery job failed", delivery_id=delivery_id)
        return "error"


async def run_maintenance(ctx: dict[str, Any]) -> str:
    """maintenance (cron): prune finished instances, expire idempotency records, report stuck runs."""
    try:
        report = await _runtime(ctx).maintenance.run_once()
        return f"expired={report.expired_idempotency_records} stuck={report.stuck_running}"
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the next run tries again
        _log.exception("maintenance failed")
        return "error"


async def evaluate_scheduled_entries(ctx: dict[str, Any]) -> int:
    """flow_triggers (cron): enter the customers who joined a segment_entry flow's segment since the last run, and
    the audiences of scheduled journeys whose schedule fired (see `entries`)."""
    runtime = _runtime(ctx)
    if runtime.entries is None:
        return 0
    try:
        return await runtime.entries.run_once()
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the next run tries again
        _log.exception("scheduled entries failed")
        return 0


def build_workers(runtime: SchedulerRuntime) -> list[Worker]:
    """One arq worker per queue, with the configured concurrency, UTC cron times and no kept results."""
    settings = runtime.settings
    # arq logs every job at INFO; at thousands of timers a second that is noise, our counters say it better.
    logging.getLogger("arq").setLevel(logging.WARNING)
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    common: dict[str, Any] = {
        "redis_settings": redis_settings,
        "handle_signals": False,
        "keep_result": 0,
        "max_tries": 3,
        "ctx": {"runtime": runtime},
        "timezone": UTC,
        "log_results": False,
        "job_timeout": 300,
        **JSON_JOBS,
    }
    return [
        Worker(
            functions=[func(fire_due_timers, keep_result=0)],
            queue_name=DELAYED_RESUME_QUEUE,
            max_jobs=settings.delayed_resume_concurrency,
            poll_delay=settings.arq_poll_seconds,
            **common,
        ),
        Worker(
            functions=[func(send_delivery, keep_result=0)],
            queue_name=DELIVERIES_QUEUE,
            max_jobs=settings.deliveries_concurrency,
            poll_delay=max(settings.arq_poll_seconds, 0.1),
            **common,
        ),
        Worker(
            functions=[],
            cron_jobs=[
                cron(run_maintenance, name="maintenance", second=17, unique=True, keep_result=_CRON_RESULT_SECONDS)
            ],
            queue_name=MAINTENANCE_QUEUE,
            max_jobs=settings.maintenance_concurrency,
            poll_delay=0.5,
            **common,
        ),
        Worker(
            functions=[],
            cron_jobs=[
                cron(
                    evaluate_scheduled_entries,
                    name="scheduled_entries",
                    second=37,
                    unique=True,
                    keep_result=_CRON_RESULT_SECONDS,
                )
            ],
            queue_name=FLOW_TRIGGERS_QUEUE,
            max_jobs=settings.flow_triggers_concurrency,
            poll_delay=0.5,
            **common,
        ),
    ]


async def run_supervised(name: str, start: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived loop; if it dies (e.g. Redis went away), log it and start it again with backoff."""
    delay = 0.5
    while True:
        try:
            await start()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - restart whatever killed the loop
            _log.exception("loop died; restarting", loop=name, retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
