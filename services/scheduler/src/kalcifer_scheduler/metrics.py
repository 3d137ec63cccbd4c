"""The scheduler's Prometheus metrics (beside every server's RPC metrics, `kalcifer_common.rpc.metrics`).

- `kalcifer_scheduler_timer_lag_seconds{via}`: from a timer's fire time (or its wait's creation, when later) to
  the engine's answer to its resume; `via` is `timer` (its Redis bucket fired it) or `sweep` (the PostgreSQL sweep
  found it overdue: Redis lost it, or a resume failed). Measured once, in `SchedulerStats.record_fired`, which
  also logs its percentiles.
- `kalcifer_scheduler_deliveries_total{status}`: deliveries this scheduler moved into `status`: by a send attempt
  (`sent`; `pending` again for a retry; `failed`) or by a provider's report (`sent`, `delivered`, `bounced`,
  `failed`).
- `kalcifer_scheduler_queue_depth{queue}`: jobs in each arq queue (due or deferred), and
  `kalcifer_scheduler_armed_timers`: timers armed in Redis; read every METRICS_REFRESH_SECONDS (`QueueGauges`).
  Every replica reads the same Redis: aggregate with max().

Labels are fixed words only: never a tenant or any id.
"""

from __future__ import annotations

from arq.connections import ArqRedis
from kalcifer_common.statuses import DeliveryStatus
from prometheus_client import Counter, Gauge, Histogram

from kalcifer_scheduler.keys import (
    DELAYED_RESUME_QUEUE,
    DELIVERIES_QUEUE,
    FLOW_TRIGGERS_QUEUE,
    MAINTENANCE_QUEUE,
    RedisKeys,
)

QUEUES = (DELAYED_RESUME_QUEUE, DELIVERIES_QUEUE, FLOW_TRIGGERS_QUEUE, MAINTENANCE_QUEUE)
VIA_TIMER, VIA_SWEEP = "timer", "sweep"

TIMER_LAG = Histogram(
    "kalcifer_scheduler_timer_lag_seconds",
    "From a timer's fire time to the engine's answer to its resume, by what fired it (timer or sweep).",
    ["via"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
DELIVERIES = Counter(
    "kalcifer_scheduler_deliveries",
    "Deliveries this scheduler moved into each status (by a send attempt or a provider's report).",
    ["status"],
)
QUEUE_DEPTH = Gauge("kalcifer_scheduler_queue_depth", "Jobs in each arq queue, due or deferred.", ["queue"])
ARMED_TIMERS = Gauge("kalcifer_scheduler_armed_timers", "Timers armed in Redis (due within the horizon).")

# Every series exists from the start (at 0).
for _via in (VIA_TIMER, VIA_SWEEP):
    TIMER_LAG.labels(_via)
for _status in DeliveryStatus:
    if _status is not DeliveryStatus.SENDING:  # a claim, not an outcome
        DELIVERIES.labels(_status.value)
for _queue in QUEUES:
    QUEUE_DEPTH.labels(_queue)


class QueueGauges:
    """Reads the queue depths and the armed timers from Redis, in one round trip (refreshed periodically)."""

    def __init__(self, redis: ArqRedis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def refresh(self) -> None:
        """Set `QUEUE_DEPTH` and `ARMED_TIMERS` from Redis (an arq queue is a sorted set named after it)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.zcard(queue)
            pipe.zcard(self._keys.timers)
            *depths, armed = await pipe.execute()
        for queue, depth in zip(QUEUES, depths, strict=True):
            QUEUE_DEPTH.labels(queue).set(int(depth))
        ARMED_TIMERS.set(int(armed))
