"""`kalcifer-scheduler`: timers, scheduled entries, the send queue and maintenance on arq, the only Redis user.

How a timer fires (SPEC 6.5; the wait row in PostgreSQL is the truth, Redis only makes it punctual):

1. The engine commits a wait and calls `ScheduleResume(s)`; the wait id becomes a member of a Redis sorted set
   scored by fire time (arming twice is a no-op) and an arq job `timers:<bucket end>` on `delayed_resume` is
   enqueued for its time bucket (`TIMER_BUCKET_SECONDS`). Timers beyond `TIMER_HORIZON_SECONDS` are not put in
   Redis at all; the horizon arming reads them from the table when they come near.
2. At the bucket's time the job pops every due member, claims the rows in PostgreSQL (a lease in the scheduler's
   own `wait_claims`, one conditional upsert: one replica per wait; paused instances are left alone) and resumes them
   in one `EngineService.ResumeInstances` call per `FIRE_BATCH_SIZE`, trigger "timer" (timer waits) or "timeout"
   (an event wait's deadline). `applied=false` is an answer, not an error.
3. Every `SWEEP_INTERVAL_SECONDS` each replica claims and fires overdue waits straight from the table (so a Redis
   flush or restart delays a resume by about one period), fires timers whose bucket job was lost, and arms the
   next slice of the horizon.

Also: `deliveries` (sent once through the tenant's provider, `pending -> sending -> sent|failed`, retried with
backoff), `flow_triggers` (each minute: customers who joined a segment_entry flow's segment since the last run,
found from the customers that changed, and scheduled journeys' audiences), `maintenance` (pruning and
expiry, each minute), health (NOT_SERVING while Redis or the engine is unreachable) and periodic counters.
Every setting is a `SchedulerSettings` field (`kalcifer_common.settings`), read from the environment.
"""
