"""Counters of the scheduler's own work, logged periodically as one structured line; the timer lag and the
deliveries' moves are measured here once, for the log and for /metrics (`metrics`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kalcifer_common.logging import get_logger
from kalcifer_common.statuses import DeliveryStatus

from kalcifer_scheduler.metrics import DELIVERIES, TIMER_LAG, VIA_SWEEP, VIA_TIMER

_log = get_logger(__name__)

# A timer that reaches the engine later than this after it fell due (its fire time, or its creation when that is
# later) counts as late.
LATE_AFTER_SECONDS = 1.0
# Lateness samples kept between two stats lines (bounded: a percentile needs no more).
_MAX_SAMPLES = 10_000


@dataclass
class SchedulerStats:
    """Monotonic counters plus the lateness samples of the current logging window."""

    fired: int = 0
    late: int = 0
    swept: int = 0
    failed: int = 0
    not_applied: int = 0
    armed: int = 0
    cancelled: int = 0
    deliveries_sent: int = 0
    deliveries_retried: int = 0
    deliveries_failed: int = 0
    calls_answered: int = 0
    calls_failed: int = 0
    _lateness: list[float] = field(default_factory=list)

    def record_fired(self, lateness_seconds: list[float], *, swept: bool, not_applied: int) -> None:
        """Count resumes handed to the engine (applied or answered "already done")."""
        self.fired += len(lateness_seconds)
        self.not_applied += not_applied
        if swept:
            self.swept += len(lateness_seconds)
        self.late += sum(1 for value in lateness_seconds if value > LATE_AFTER_SECONDS)
        room = _MAX_SAMPLES - len(self._lateness)
        if room > 0:
            self._lateness.extend(lateness_seconds[:room])
        lag = TIMER_LAG.labels(VIA_SWEEP if swept else VIA_TIMER)
        for value in lateness_seconds:
            lag.observe(max(value, 0.0))

    def delivery_sent(self, status: DeliveryStatus) -> None:
        """Count a send attempt's outcome: the delivery is SENT, PENDING again (a retry later) or FAILED."""
        DELIVERIES.labels(status.value).inc()
        if status is DeliveryStatus.SENT:
            self.deliveries_sent += 1
        elif status is DeliveryStatus.PENDING:
            self.deliveries_retried += 1
        else:
            self.deliveries_failed += 1

    def delivery_reported(self, status: DeliveryStatus) -> None:
        """Count a provider's report that moved a delivery into `status`."""
        DELIVERIES.labels(status.value).inc()

    def log(self) -> None:
        """Write one `scheduler stats` line with the counters and this window's lateness p50/p99."""
        samples = sorted(self._lateness)
        self._lateness = []

        def pick(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))], 4) if samples else 0.0

        _log.info(
            "scheduler stats",
            fired=self.fired,
            late=self.late,
            swept=self.swept,
            failed=self.failed,
            not_applied=self.not_applied,
            armed=self.armed,
            cancelled=self.cancelled,
            deliveries_sent=self.deliveries_sent,
            deliveries_retried=self.deliveries_retried,
            deliveries_failed=self.deliveries_failed,
            calls_answered=self.calls_answered,
            calls_failed=self.calls_failed,
            lateness_p50_s=pick(0.5),
            lateness_p99_s=pick(0.99),
            window_samples=len(samples),
        )
