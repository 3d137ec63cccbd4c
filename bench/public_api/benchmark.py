"""Kalcifer measured through its public gRPC API (issue #11): the suite as `make run` starts it, driven by a load
process of its own, each figure next to a raw baseline measured in the same run.

The three services run as processes (`running_suite`) on the bench's scratch database and Redis db, with the
per-tenant rate limit raised out of the way (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST): what is measured is the
work, not the budget. One tenant, made through TenantService. The load process (bench/loadgen.py) speaks grpc.aio
to the API like any client. In order:

1. trigger_throughput: TriggerFlow of `trigger -> wait_for_event` (answered once the run reached its wait and
   committed), `CONCURRENCY` in flight, `TRIGGER_ROUNDS` rounds alternating with the raw baseline (asyncpg, same
   concurrency, one instance row + 4 step rows per transaction); medians of the rounds. Each round also drives
   the same calls through two Python gRPC processes that do nothing but relay (grpc_floor.py): the ceiling the
   services' layout (client -> API -> engine) puts on this machine before any work is done.
2. waiting_memory: the engine's RSS (with any children) and the size of every table, before and after
   `WAITING_INSTANCES` more instances of that flow are started and left waiting; scaled per 100k and per instance.
3. event_resume at each of `EVENT_RATES`: IngestEvent `ping` to participants whose instance waits for it, open
   loop for `EVENT_SECONDS`; IngestEvent answers after the resumed run committed. Latency from each call's
   scheduled time. At the first (the target's) rate `EVENT_ROUNDS` rounds, its p50 and p99 the medians of the
   rounds' own. Next to it, the raw transaction open loop at the same rate; and, first, the rate IngestEvent
   sustains closed loop (`CONCURRENCY` in flight), which says whether an offered rate is above it.
4. timer_lateness: `TIMER_RATE` timers a second due over `TIMER_SECONDS` (10 per 10 ms slot), each an instance
   parked on `wait_until` its slot, all started (TriggerFlow) well before the first is due. Read from the rows
   afterwards (see readings.py). Next to it, raw arq with one empty job deferred to each of the same fire times.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from bench.harness import BenchEnv, Comparison
from bench.loadgen import ClosedLoopResult, LoadProcess, OpenLoopResult
from bench.public_api import baselines, grpc_floor, load, readings
from bench.public_api.flows import (
    RESUME_EVENT,
    TIMER_PAIRS_PER_FLOW,
    active_flow,
    event_wait_graph,
    timer_entry,
    timer_graph,
)
from bench.report import (
    event_resume_rounds_figure,
    latency_summary,
    throughput_figure,
    timer_figure,
    waiting_memory_figure,
)
from tests.support.eventually import eventually
from tests.support.processes import Suite, running_suite
from tests.support.rpc import bearer
from tests.support.tenants import new_tenant

CONCURRENCY = 32
WARM_UP_CALLS = 300
TRIGGER_ROUNDS = 3
TRIGGER_CALLS = 1000
WAITING_INSTANCES = 20_000
EVENT_RATES = (200, 500)
EVENT_SECONDS = 10
EVENT_ROUNDS = 3
EVENT_CAPACITY_CALLS = 1000
TIMER_RATE = 1000
TIMER_SECONDS = 10
TIMER_SLOT_SECONDS = 0.01
SETTLE_SECONDS = 3.0
SUITE_SETTINGS = {
    "RATE_LIMIT_PER_SECOND": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "LOG_LEVEL": "WARNING",
}
RAW_TXN = "raw asyncpg txn (1 instance + 4 step rows)"


class _Driver:
    """The running suite, the tenant and the load process: what every phase needs."""

    def __init__(self, env: BenchEnv, suite: Suite, tenant_id: uuid.UUID, key: str, load_process: LoadProcess):
        self.env, self.suite, self.tenant_id, self.key, self.load = env, suite, tenant_id, key, load_process
        self.address = suite.address("api")
        self._participants = 0
        self.raw_bytes_per_instance = 0.0

    def participants(self, count: int, prefix: str) -> list[str]:
        """`count` participant ids never used before in this run."""
        first, self._participants = self._participants, self._participants + count
        return [f"{prefix}-{n}" for n in range(first, first + count)]

    async def trigger(self, starts: list[tuple[str, str, str]]) -> ClosedLoopResult:
        return await self.load.run(load.trigger_flows, self.address, self.key, starts, CONCURRENCY)

    def engine_rss(self) -> int:
        return readings.resident_bytes(self.suite.processes["engine"].pid)


async def run(env: BenchEnv) -> list[Comparison]:
    """All four measurements on one suite; figures into `env.report`, comparison rows returned."""
    log_dir = env.work_dir / "public-api-logs"
    with (
        LoadProcess() as load_process,
        running_suite(env.database_url, env.redis_url, log_dir, SUITE_SETTINGS) as suite,
    ):
        tenant = new_tenant(suite, "bench")
        driver = _Driver(env, suite, tenant.id, tenant.key, load_process)
        async with grpc.aio.insecure_channel(driver.address) as channel:
            event_flow = await active_flow(channel, tenant.auth, "bench-event-wait", event_wait_graph())
            rows = await _trigger_throughput(driver, event_flow)
            rows += await _waiting_memory(driver, event_flow)
            rows += await _event_resume(driver, event_flow)
            rows += await _timer_lateness(driver, channel, env.report.figures["trigger_throughput"]["value"])
    return rows


async def _trigger_throughput(driver: _Driver, flow_id: str) -> list[Comparison]:
    await baselines.create_raw_tables(driver.env.database_url)
    database_url = driver.env.database_url
    # Warm both sides up (connections, pools, caches): not measured.
    await driver.trigger([(flow_id, "", p) for p in driver.participants(WARM_UP_CALLS, "warm")])
    await driver.load.run(baselines.raw_start_transactions, database_url, WARM_UP_CALLS, CONCURRENCY)
    raw_tables = [baselines.RAW_INSTANCES, baselines.RAW_STEPS]
    raw_size_before = sum((await readings.table_bytes(database_url, raw_tables)).values())
    ours: list[ClosedLoopResult] = []
    raw: list[ClosedLoopResult] = []
    floor: list[ClosedLoopResult] = []
    floor_starts = [(flow_id, "", f"floor-{n}") for n in range(TRIGGER_CALLS)]
    for _ in range(TRIGGER_ROUNDS):
        raw.append(await driver.load.run(baselines.raw_start_transactions, database_url, TRIGGER_CALLS, CONCURRENCY))
        ours.append(await driver.trigger([(flow_id, "", p) for p in driver.participants(TRIGGER_CALLS, "trigger")]))
        # The same calls through two Python gRPC hops that do nothing (grpc_floor.py), the services' layout alone.
        with grpc_floor.two_hops() as floor_address:
            floor.append(
                await driver.load.run(load.trigger_flows, floor_address, driver.key, floor_starts, CONCURRENCY)
            )
    # What the raw rows take, grown over the rounds (past the first pages every table and index starts with).
    raw_size_growth = sum((await readings.table_bytes(database_url, raw_tables)).values()) - raw_size_before
    driver.raw_bytes_per_instance = raw_size_growth / (TRIGGER_ROUNDS * TRIGGER_CALLS)
    value = statistics.median(result.rate for result in ours)
    baseline = statistics.median(result.rate for result in raw)
    floor_rate = statistics.median(result.rate for result in floor)
    latencies = [latency for result in ours for latency in result.latencies_ms]
    errors = sum(sum(result.errors.values()) for result in ours)
    driver.env.report.figures["trigger_throughput"] = throughput_figure(
        value,
        baseline,
        unit="instances/s",
        baseline_name=f"{RAW_TXN}, same concurrency",
        concurrency=CONCURRENCY,
        calls_per_round=TRIGGER_CALLS,
        rounds=[round(result.rate, 1) for result in ours],
        baseline_rounds=[round(result.rate, 1) for result in raw],
        grpc_two_hop_floor_per_s=round(floor_rate, 1),
        grpc_two_hop_floor_rounds=[round(result.rate, 1) for result in floor],
        floor_errors=sum(sum(result.errors.values()) for result in floor),
        errors=errors,
        error_codes=_merged([result.errors for result in ours]),
        **{f"call_{key}": value for key, value in latency_summary(latencies).items() if key != "count"},
    )
    return [
        Comparison(
            f"api: TriggerFlow to first wait, {CONCURRENCY} in flight", "runs/s", value, baseline, f"{RAW_TXN} tx/s"
        ),
        Comparison(
            f"api: TriggerFlow to first wait, {CONCURRENCY} in flight",
            "runs/s",
            value,
            floor_rate,
            "two gRPC hops doing nothing, calls/s",
        ),
    ]


async def _waiting_memory(driver: _Driver, flow_id: str) -> list[Comparison]:
    database_url = driver.env.database_url
    raw_bytes_per_instance = driver.raw_bytes_per_instance
    await asyncio.sleep(SETTLE_SECONDS)
    rss_before = driver.engine_rss()
    tables_before = await readings.table_bytes(database_url)
    waiting_before = (await readings.instances_by_status(database_url, driver.tenant_id)).get("waiting", 0)
    result = await driver.trigger([(flow_id, "", p) for p in driver.participants(WAITING_INSTANCES, "waiting")])
    await asyncio.sleep(SETTLE_SECONDS)
    rss_after = driver.engine_rss()
    tables_after = await readings.table_bytes(database_url)
    waiting_after = (await readings.instances_by_status(database_url, driver.tenant_id)).get("waiting", 0)
    added = waiting_after - waiting_before
    if added <= 0:
        raise RuntimeError(f"no instance was left waiting ({result.errors or 'no errors'}); see {driver.suite.log_dir}")
    growth = {name: tables_after.get(name, 0) - size for name, size in tables_before.items()}
    figure = waiting_memory_figure(
        rss_after - rss_before,
        sum(growth.values()),
        added,
        started=WAITING_INSTANCES,
        errors=sum(result.errors.values()),
        engine_rss_before_mb=round(rss_before / 2**20, 1),
        engine_rss_after_mb=round(rss_after / 2**20, 1),
        waiting_instances_after=waiting_after,
        db_bytes_per_instance_by_table={
            name: round(grown / added) for name, grown in sorted(growth.items()) if grown > 0
        },
        raw_db_bytes_per_instance=round(raw_bytes_per_instance),
        trigger_rate_per_s=round(result.rate, 1),
    )
    driver.env.report.figures["waiting_memory"] = figure
    return [
        Comparison(
            "api: engine RSS growth per 100k waiting instances",
            "MB",
            figure["engine_rss_growth_mb_per_100k"],
            50.0,
            "MB, the target (there is no raw baseline)",
            higher_is_better=False,
        ),
        Comparison(
            "api: database bytes per waiting instance",
            "bytes",
            figure["db_bytes_per_waiting_instance"],
            raw_bytes_per_instance,
            f"bytes of {RAW_TXN}",
            higher_is_better=False,
        ),
    ]


async def _event_resume(driver: _Driver, flow_id: str) -> list[Comparison]:
    database_url = driver.env.database_url
    needed = EVENT_CAPACITY_CALLS + sum(rate * EVENT_SECONDS * _event_rounds(rate) for rate in EVENT_RATES)
    waiting = await readings.waiting_participants(database_url, driver.tenant_id, uuid.UUID(flow_id), needed)
    if len(waiting) < needed:
        raise RuntimeError(f"{len(waiting)} instances wait for an event; the event benchmark needs {needed}")
    capacity: ClosedLoopResult = await driver.load.run(
        load.ingest_events_closed,
        driver.address,
        driver.key,
        waiting[:EVENT_CAPACITY_CALLS],
        RESUME_EVENT,
        CONCURRENCY,
    )
    waiting = waiting[EVENT_CAPACITY_CALLS:]
    rows: list[Comparison] = []
    for rate in EVENT_RATES:
        count = rate * EVENT_SECONDS
        ours: list[OpenLoopResult] = []
        raw: list[OpenLoopResult] = []
        for _ in range(_event_rounds(rate)):
            participants, waiting = waiting[:count], waiting[count:]
            ours.append(
                await driver.load.run(load.ingest_events, driver.address, driver.key, participants, RESUME_EVENT, rate)
            )
            await _drained(driver)
            raw.append(
                await driver.load.run(baselines.raw_start_transactions_open, database_url, count, rate, CONCURRENCY)
            )
        name = "event_resume" if rate == EVENT_RATES[0] else f"event_resume_{rate}"
        figure = event_resume_rounds_figure(
            rate,
            [result.latencies_ms for result in ours],
            sum(result.error_count for result in ours),
            sent=sum(result.sent for result in ours),
            seconds=EVENT_SECONDS,
            error_codes=_merged([counts for result in ours for counts in (result.errors, result.unexpected)]),
            send_lag_p99_ms=max(result.send_lag_p99_ms for result in ours),
            closed_loop_per_s=round(capacity.rate, 1),
            closed_loop_errors=sum(capacity.errors.values()),
        )
        raw_figure = event_resume_rounds_figure(
            rate, [result.latencies_ms for result in raw], sum(result.error_count for result in raw)
        )
        figure |= {
            "raw_txn_p50_ms": raw_figure["p50_ms"],
            "raw_txn_p99_ms": raw_figure["p99_ms"],
            "raw_txn_errors": raw_figure["errors"],
        }
        driver.env.report.figures[name] = figure
        driver.env.report.latencies_ms[f"ours: event resume @ {rate}/s"] = [
            latency for result in ours for latency in result.latencies_ms
        ]
        driver.env.report.latencies_ms[f"raw asyncpg txn (event resume baseline) @ {rate}/s"] = [
            latency for result in raw for latency in result.latencies_ms
        ]
        for quantile in ("p50_ms", "p99_ms"):
            rows.append(
                Comparison(
                    f"api: IngestEvent resume {quantile[:-3]} @ {rate}/s open loop",
                    "ms",
                    figure[quantile],
                    raw_figure[quantile],
                    f"{RAW_TXN} at the same rate, ms",
                    higher_is_better=False,
                    extra={"errors": figure["errors"], "rounds": len(ours)},
                )
            )
    return rows


def _event_rounds(rate: int) -> int:
    """Rounds at `rate`: EVENT_ROUNDS at the target's rate (its figures are the rounds' medians), one above it."""
    return EVENT_ROUNDS if rate == EVENT_RATES[0] else 1


async def _drained(driver: _Driver) -> None:
    """Wait until the suite routed every event stored so far: a client that gave up on its calls (an offered rate
    above capacity) leaves stored events the suite still routes, and the next measurement must not share the
    machine with that backlog."""

    async def unrouted() -> int:
        return await readings.unrouted_events(driver.env.database_url, driver.tenant_id)

    await eventually(unrouted, until=lambda left: left == 0, within=300, interval=1.0, what="every event routed")


def _timer_schedule(first_due: datetime) -> list[datetime]:
    """The fire time of every timer: TIMER_RATE * TIMER_SLOT_SECONDS of them per slot, over TIMER_SECONDS."""
    slots = round(TIMER_SECONDS / TIMER_SLOT_SECONDS)
    return [first_due + timedelta(seconds=slot * TIMER_SLOT_SECONDS) for slot in range(slots)]


async def _timer_lateness(driver: _Driver, channel: grpc.aio.Channel, trigger_rate: float) -> list[Comparison]:
    per_slot = round(TIMER_RATE * TIMER_SLOT_SECONDS)
    count = round(TIMER_RATE * TIMER_SECONDS)
    # Every timer must be armed before the first is due: starting them takes count / trigger_rate seconds at the
    # rate just measured; 1.4 times that, and 15 s for the flows and for a machine that slows down meanwhile (a
    # timer armed after it was due is left out and counted as `armed_late`).
    lead = 1.4 * count / max(trigger_rate, 1.0) + 15
    slots = _timer_schedule(datetime.now(UTC) + timedelta(seconds=lead))
    auth = bearer(driver.key)
    flow_ids: list[str] = []
    for first in range(0, len(slots), TIMER_PAIRS_PER_FLOW):
        graph = timer_graph(slots[first : first + TIMER_PAIRS_PER_FLOW])
        flow_ids.append(await active_flow(channel, auth, f"bench-timers-{first}", graph))
    participants = iter(driver.participants(count, "timer"))
    starts = [
        (flow_ids[slot // TIMER_PAIRS_PER_FLOW], timer_entry(slot % TIMER_PAIRS_PER_FLOW), next(participants))
        for slot in range(len(slots))
        for _ in range(per_slot)
    ]
    started = await driver.trigger(starts)
    armed_by = datetime.now(UTC)
    flows = [uuid.UUID(flow_id) for flow_id in flow_ids]
    database_url = driver.env.database_url

    async def pending() -> int:
        return await readings.pending_timers(database_url, driver.tenant_id, flows)

    last_due = slots[-1].timestamp()
    await asyncio.sleep(max(0.0, last_due - time.time()))
    with contextlib.suppress(AssertionError):  # the timers still pending are reported as `unfired`
        await eventually(pending, until=lambda left: left == 0, within=180, interval=1.0, what="every timer fired")
    outcomes = await readings.timer_outcomes(database_url, driver.tenant_id, flows, count)

    # raw arq: the same schedule shape (same offsets, same rate), due after its jobs are queued
    arq_first = time.time() + 5 + count / 2000
    arq_fire_times = [arq_first + slot * TIMER_SLOT_SECONDS for slot in range(len(slots)) for _ in range(per_slot)]
    arq_lateness, arq_overrun = await driver.load.run(baselines.raw_arq_lateness, driver.env.redis_url, arq_fire_times)

    counted = len(outcomes.lateness_ms)
    extra: dict[str, object] = {
        "timers": count,
        "window_s": TIMER_SECONDS,
        "counted": counted,
        "armed_late": outcomes.armed_late,
        "missing": outcomes.missing,
        "unfired": outcomes.unfired,
        "start_errors": sum(started.errors.values()),
        "start_error_codes": started.errors,
        "armed_s_before_first_due": round((slots[0] - armed_by).total_seconds(), 1),
        "raw_arq_jobs_ran": len(arq_lateness),
        "raw_arq_enqueue_overrun_s": round(arq_overrun, 2),
        "measured_to": "the resumed wait step's end_time, stamped in the resume's transaction (readings.py)",
    }
    if outcomes.commit_lateness_ms:
        commit = latency_summary(outcomes.commit_lateness_ms)
        extra |= {"commit_p50_ms": commit["p50_ms"], "commit_p99_ms": commit["p99_ms"]}
    figure = timer_figure(TIMER_RATE, outcomes.lateness_ms, arq_lateness, **extra)
    driver.env.report.figures["timer_lateness"] = figure
    driver.env.report.latencies_ms[f"ours: timer lateness @ {TIMER_RATE}/s"] = outcomes.lateness_ms
    driver.env.report.latencies_ms[f"raw arq: timer lateness @ {TIMER_RATE}/s"] = arq_lateness
    return [
        Comparison(
            f"api: timer lateness {quantile} @ {TIMER_RATE}/s",
            "ms",
            figure[f"{quantile}_ms"],
            figure[f"raw_arq_{quantile}_ms"],
            "raw arq, one empty job per timer, ms",
            higher_is_better=False,
            extra={"early": figure["early"], "armed_late": outcomes.armed_late},
        )
        for quantile in ("p50", "p99")
    ]


def _merged(counts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for each in counts:
        for key, value in each.items():
            merged[key] = merged.get(key, 0) + value
    return merged
