"""Every Redis key and arq queue name the scheduler uses, in one place (the scheduler alone talks to Redis)."""

from __future__ import annotations

from dataclasses import dataclass

# The queues of SPEC 2. Their names are the arq queue keys; job ids are global in arq (`arq:job:<id>`), so the
# scheduler's job ids carry a kind prefix (`timers:`, `delivery:`) to never collide across queues.
DELAYED_RESUME_QUEUE = "delayed_resume"
FLOW_TRIGGERS_QUEUE = "flow_triggers"
MAINTENANCE_QUEUE = "maintenance"
DELIVERIES_QUEUE = "deliveries"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The scheduler's own keys under a configurable prefix."""

    prefix: str

    @property
    def timers(self) -> str:
        """Sorted set: member = wait id, score = fire time in Unix milliseconds. A member is an armed timer."""
        return f"{self.prefix}:timers"

    @property
    def armed_until(self) -> str:
        """Unix ms up to which waits from PostgreSQL have been armed (the horizon cursor); gone after a flush."""
        return f"{self.prefix}:timers:armed-until"

    @property
    def arming_lock(self) -> str:
        """Held by the replica that advances the horizon cursor, so replicas do not read the same window."""
        return f"{self.prefix}:timers:arming-lock"


def bucket_job_id(bucket_ms: int) -> str:
    """The arq job id of the job that fires the timers due by `bucket_ms` (one job per time bucket)."""
    return f"timers:{bucket_ms}"


def delivery_job_id(delivery_id: str, attempt: int) -> str:
    """The arq job id of one send attempt (the attempt keeps a retry from colliding with the running job)."""
    return f"delivery:{delivery_id}:{attempt}"
