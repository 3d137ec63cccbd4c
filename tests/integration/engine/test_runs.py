"""Instance execution on real PostgreSQL through the in-process runtime: runs, waits, resumes, events, lifecycle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kalcifer_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kalcifer_engine.repo.instances import lock_instance
from kalcifer_engine.repo.waits import fire_wait
from kalcifer_engine.runtime import events, lifecycle, migration, recovery, resumes
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import (
    add_version,
    create_flow,
    create_tenant,
    graph,
    instance,
    make_runtime,
    start,
    store_event,
)
from tests.support.eventually import eventually

TRIGGER = ("start", "event_entry", {"event_type": "go"})


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(engine_role_db, database_url, event_lookback_seconds=5.0)
    yield runtime
    await runtime.close()


async def step_statuses(db: AsyncEngine, instance_id: uuid.UUID) -> list[tuple[str, str]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT node_id, status FROM execution_steps WHERE instance_id = :i ORDER BY seq"), {"i": instance_id}
        )
        return [(r.node_id, r.status) for r in rows]


async def pending_waits(db: AsyncEngine, instance_id: uuid.UUID) -> list[Any]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM waits WHERE instance_id = :i AND status = 'pending' ORDER BY create_time"),
            {"i": instance_id},
        )
        return list(rows)


async def make_due(db: AsyncEngine, wait_id: uuid.UUID) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE waits SET fire_time = now() - interval '1 second' WHERE id = :w"), {"w": wait_id}
        )


async def test_start_waits_then_resume_completes_with_steps_and_context(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph([TRIGGER, ("w", "t_pause", {"seconds": 60}), ("s", "t_send", {})], [("start", "w"), ("w", "s")]),
    )
    instance_id = await start(rt, tenant, flow, context={"plan": "pro"})
    row = await instance(db_engine, instance_id)
    assert (row.status, row.current_nodes) == ("waiting", ["w"])
    assert row.context["plan"] == "pro"
    assert row.context["_instance_id"] == str(instance_id)
    assert row.context["_participant_id"] == "p1"
    assert row.context["_tenant_id"] == str(tenant)
    [wait] = await pending_waits(db_engine, instance_id)
    early = await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, wait.id, "timer"))
    assert early == resumes.ResumeOutcome(False, resumes.NOT_DUE)
    await make_due(db_engine, wait.id)
    assert (await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, wait.id, "timer"))).applied
    row = await instance(db_engine, instance_id)
    assert (row.status, row.current_nodes) == ("completed", [])
    assert row.end_time is not None
    assert row.context["accumulated"]["w"] == {"resumed_by": "timer"}
    # One row per visit (SPEC 6.3): the wait's step, WAITING until then, is completed in place.
    assert await step_statuses(db_engine, instance_id) == [
        ("start", "completed"),
        ("w", "completed"),
        ("s", "completed"),
    ]
    async with db_engine.connect() as conn:
        waited = (
            await conn.execute(
                text("SELECT end_time, output FROM execution_steps WHERE instance_id = :i AND node_id = 'w'"),
                {"i": instance_id},
            )
        ).one()
    assert waited.end_time is not None
    assert waited.output == {"resumed_by": "timer"}
    async with db_engine.connect() as conn:
        keys = (
            (
                await conn.execute(
                    text("SELECT idempotency_key FROM deliveries WHERE instance_id = :i"), {"i": instance_id}
                )
            )
            .scalars()
            .all()
        )
    assert keys == [f"{instance_id}:s:a1:v1"]


async def test_duplicate_and_stale_resumes_change_nothing(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph([TRIGGER, ("w", "t_pause", {"seconds": -1}), ("s", "t_send", {})], [("start", "w"), ("w", "s")]),
    )
    instance_id = await start(rt, tenant, flow)
    [wait] = await pending_waits(db_engine, instance_id)
    request = resumes.ResumeRequest(instance_id, wait.id, "timer")
    outcomes = await resumes.resume_many(rt, [request, request, request])
    assert [o.applied for o in outcomes] == [True, False, False]
    assert {o.reason for o in outcomes[1:]} == {resumes.INSTANCE_FINISHED}
    again = await resumes.resume_one(rt, request)
    assert again == resumes.ResumeOutcome(False, resumes.INSTANCE_FINISHED)
    stale = await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, uuid.uuid4(), "timer"))
    assert not stale.applied
    assert len(await step_statuses(db_engine, instance_id)) == 3
    async with db_engine.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM deliveries WHERE instance_id = :i"), {"i": instance_id})
        ).scalar_one() == 1


async def test_fan_out_waits_on_several_paths_and_an_end_node_cancels_the_rest(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("w1", "t_pause", {"seconds": 600}), ("w2", "t_pause", {"seconds": -1}), ("end", "t_end", {})],
        [("start", "w1"), ("start", "w2"), ("w2", "end")],
    )
    flow = await create_flow(db_engine, tenant, g)
    instance_id = await start(rt, tenant, flow)
    assert sorted((await instance(db_engine, instance_id)).current_nodes) == ["w1", "w2"]
    waits = {w.node_id: w for w in await pending_waits(db_engine, instance_id)}
    assert (await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, waits["w2"].id, "timer"))).applied
    row = await instance(db_engine, instance_id)
    assert (row.status, row.current_nodes) == ("completed", [])
    assert await pending_waits(db_engine, instance_id) == []
    late = await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, waits["w1"].id, "timer"))
    assert late == resumes.ResumeOutcome(False, resumes.INSTANCE_FINISHED)


async def test_already_in_flow_and_re_entry_policies(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    waiting = graph([TRIGGER, ("w", "t_pause", {"seconds": 600})], [("start", "w")])
    flow = await create_flow(db_engine, tenant, waiting)
    first = await start(rt, tenant, flow)
    with pytest.raises(AlreadyExists) as refused:
        await start(rt, tenant, flow)
    assert refused.value.reason == "ALREADY_IN_FLOW"
    await lifecycle.cancel_instance(rt, tenant, first, "")
    await start(rt, tenant, flow)  # after_exit: may enter again once finished
    always = await create_flow(db_engine, tenant, waiting, re_entry="always")
    assert await start(rt, tenant, always) != await start(rt, tenant, always)
    never = await create_flow(db_engine, tenant, graph([TRIGGER], []), re_entry="never")
    await start(rt, tenant, never)
    with pytest.raises(AlreadyExists):
        await start(rt, tenant, never)


async def test_start_refuses_inactive_flows_unknown_flows_and_bad_entries(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    paused = await create_flow(db_engine, tenant, graph([TRIGGER], []), status="paused")
    with pytest.raises(FailedPrecondition) as not_active:
        await start(rt, tenant, paused)
    assert not_active.value.reason == "FLOW_NOT_ACTIVE"
    with pytest.raises(NotFound):
        await start(rt, await create_tenant(db_engine), paused)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER, ("w", "t_pause", {})], [("start", "w")]))
    with pytest.raises(InvalidArgument):
        await start(rt, tenant, flow, entry_node_ids=("w",))


async def test_failures_unknown_types_retries_and_crashing_nodes(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    unknown = await create_flow(db_engine, tenant, graph([TRIGGER, ("x", "no_such_type", {})], [("start", "x")]))
    row = await instance(db_engine, await start(rt, tenant, unknown))
    assert row.status == "failed"
    assert "unknown node type 'no_such_type'" in row.exit_reason
    crash = await create_flow(db_engine, tenant, graph([TRIGGER, ("c", "t_crash", {})], [("start", "c")]))
    crashed = await start(rt, tenant, crash)
    assert (await instance(db_engine, crashed)).exit_reason == "node 'c' (t_crash) failed: RuntimeError: kaboom"
    assert (await step_statuses(db_engine, crashed))[-1] == ("c", "failed")
    flaky = await create_flow(
        db_engine, tenant, graph([TRIGGER, ("f", "t_flaky", {"succeed_at": 2})], [("start", "f")])
    )
    retried = await start(rt, tenant, flaky)
    assert (await instance(db_engine, retried)).status == "waiting"
    [retry] = await pending_waits(db_engine, retried)
    await make_due(db_engine, retry.id)
    assert (await resumes.resume_one(rt, resumes.ResumeRequest(retried, retry.id, "timer"))).applied
    row = await instance(db_engine, retried)
    assert row.status == "completed"
    assert row.context["accumulated"]["f"] == {"attempt": 2}
    hopeless = await create_flow(db_engine, tenant, graph([TRIGGER, ("f", "t_flaky", {})], [("start", "f")]))
    gave_up = await start(rt, tenant, hopeless)
    [retry] = await pending_waits(db_engine, gave_up)
    await make_due(db_engine, retry.id)
    await resumes.resume_one(rt, resumes.ResumeRequest(gave_up, retry.id, "timer"))
    assert (await instance(db_engine, gave_up)).status == "failed"


async def route(
    rt: Runtime, tenant: uuid.UUID, event_id: uuid.UUID, participant: str, event_type: str, data: dict[str, Any]
) -> events.RouteResult:
    return await events.route_event(rt, events.EventToRoute(tenant, event_id, participant, event_type, data))


async def test_event_resumes_matching_wait_cancels_timeout_and_starts_event_flows(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [
            TRIGGER,
            ("a", "t_await", {"event_type": "paid", "filter": "event.amount > 10"}),
            ("yes", "t_send", {}),
            ("no", "t_end", {}),
        ],
        [("start", "a"), ("a", "yes", "event_received"), ("a", "no", "timed_out")],
    )
    flow = await create_flow(db_engine, tenant, g)
    instance_id = await start(rt, tenant, flow, participant="buyer")
    [wait] = await pending_waits(db_engine, instance_id)
    small = await store_event(db_engine, tenant, "buyer", "paid", {"amount": 5})
    assert (await route(rt, tenant, small, "buyer", "paid", {"amount": 5})).resumed == 0
    other_tenant = await create_tenant(db_engine)
    foreign = await store_event(db_engine, other_tenant, "buyer", "paid", {"amount": 50})
    assert (await route(rt, other_tenant, foreign, "buyer", "paid", {"amount": 50})).resumed == 0
    big = await store_event(db_engine, tenant, "buyer", "paid", {"amount": 50})
    result = await route(rt, tenant, big, "buyer", "paid", {"amount": 50})
    assert (result.resumed, result.instance_ids) == (1, (str(instance_id),))
    assert await route(rt, tenant, big, "buyer", "paid", {"amount": 50}) == result  # idempotent per event id
    row = await instance(db_engine, instance_id)
    assert row.status == "completed"
    assert row.context["event"] == {"amount": 50}
    assert row.context["accumulated"]["a"]["branch"] == "event_received"
    late_timeout = await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, wait.id, "timeout"))
    assert late_timeout == resumes.ResumeOutcome(False, resumes.INSTANCE_FINISHED)
    starter = await create_flow(
        db_engine,
        tenant,
        graph(
            [
                ("go", "event_entry", {"event_type": "signup", "filter": "event.plan == 'pro'"}),
                ("w", "t_pause", {"seconds": 60}),
            ],
            [("go", "w")],
        ),
    )
    basic = await store_event(db_engine, tenant, "newbie", "signup", {"plan": "free"})
    assert (await route(rt, tenant, basic, "newbie", "signup", {"plan": "free"})).started == 0
    pro = await store_event(db_engine, tenant, "newbie", "signup", {"plan": "pro"})
    started = await route(rt, tenant, pro, "newbie", "signup", {"plan": "pro"})
    assert started.started == 1
    row = await instance(db_engine, uuid.UUID(started.instance_ids[0]))
    assert row.flow_id == starter
    assert row.context["event"] == {"plan": "pro"}
    assert row.status == "waiting"
    with pytest.raises(NotFound):
        await route(rt, tenant, uuid.uuid4(), "newbie", "signup", {})


async def test_an_event_entry_filter_sees_the_customer_profile_and_the_participant(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    async with db_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (tenant_id, external_id, attributes) VALUES"
                " (:t, 'gold-ann', '{\"tier\": \"gold\"}'), (:t, 'silver-bob', '{\"tier\": \"silver\"}')"
            ),
            {"t": tenant},
        )
    vip_filter = "customer.attributes.tier == 'gold' && _participant_id.startsWith('gold') && event.plan == 'pro'"
    await create_flow(
        db_engine,
        tenant,
        graph(
            [("go", "event_entry", {"event_type": "signup", "filter": vip_filter}), ("w", "t_pause", {"seconds": 60})],
            [("go", "w")],
        ),
    )

    async def signup(participant: str) -> int:
        event_id = await store_event(db_engine, tenant, participant, "signup", {"plan": "pro"})
        return (await route(rt, tenant, event_id, participant, "signup", {"plan": "pro"})).started

    assert await signup("silver-bob") == 0
    assert await signup("nobody") == 0, "no profile: `customer` is missing, the filter does not pass"
    assert await signup("gold-ann") == 1


async def test_timeout_takes_the_timed_out_branch(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [
            TRIGGER,
            ("a", "t_await", {"event_type": "paid", "timeout": -1}),
            ("yes", "t_send", {}),
            ("no", "t_pause", {"seconds": 600}),
        ],
        [("start", "a"), ("a", "yes", "event_received"), ("a", "no", "timed_out")],
    )
    instance_id = await start(rt, tenant, await create_flow(db_engine, tenant, g))
    [wait] = await pending_waits(db_engine, instance_id)
    assert (await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, wait.id, "timer"))).applied
    row = await instance(db_engine, instance_id)
    assert row.current_nodes == ["no"]
    assert row.context["accumulated"]["a"]["branch"] == "timed_out"


async def test_event_that_arrives_just_before_its_wait_is_armed_still_resumes_it(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "opened"}), ("yes", "t_send", {})],
        [("start", "a"), ("a", "yes", "event_received")],
    )
    flow = await create_flow(db_engine, tenant, g)
    # The event is stored and routed while the participant's wait does not exist yet: routing finds nothing.
    early = await store_event(db_engine, tenant, "quick", "opened", {"n": 1})
    assert (await route(rt, tenant, early, "quick", "opened", {"n": 1})).resumed == 0
    instance_id = await start(rt, tenant, flow, participant="quick")
    row = await instance(db_engine, instance_id)
    assert row.status == "completed"
    assert row.context["event"] == {"n": 1}
    # Outside the lookback window an old event does not count.
    await rt.after_commit(Effects())
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE events SET received_time = now() - interval '1 minute' WHERE participant_id = 'slow'")
        )
    old = await store_event(db_engine, tenant, "slow", "opened", {})
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE events SET received_time = now() - interval '1 minute' WHERE id = :e"), {"e": old}
        )
    assert (await instance(db_engine, await start(rt, tenant, flow, participant="slow"))).status == "waiting"


async def test_cancel_pause_resume_and_exit_flow_instances(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph([TRIGGER, ("w", "t_pause", {"seconds": 600}), ("s", "t_send", {})], [("start", "w"), ("w", "s")]),
    )
    a = await start(rt, tenant, flow, participant="a")
    b = await start(rt, tenant, flow, participant="b")
    with pytest.raises(NotFound):
        await lifecycle.cancel_instance(rt, await create_tenant(db_engine), a, "")
    cancelled = await lifecycle.cancel_instance(rt, tenant, a, "operator said so")
    assert (cancelled.status, cancelled.exit_reason) == ("exited", "operator said so")
    assert await pending_waits(db_engine, a) == []
    assert await step_statuses(db_engine, a) == [("start", "completed"), ("w", "cancelled")], "no step left waiting"
    with pytest.raises(FailedPrecondition) as finished:
        await lifecycle.cancel_instance(rt, tenant, a, "")
    assert finished.value.reason == "INSTANCE_FINISHED"
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'paused' WHERE id = :f"), {"f": flow})
    assert await lifecycle.pause_flow_instances(rt, tenant, flow) == 1
    [wait] = await pending_waits(db_engine, b)
    await make_due(db_engine, wait.id)
    held = await resumes.resume_one(rt, resumes.ResumeRequest(b, wait.id, "timer"))
    assert held == resumes.ResumeOutcome(False, resumes.HELD_FLOW_PAUSED)
    assert (await instance(db_engine, b)).status == "paused"
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'active' WHERE id = :f"), {"f": flow})
    assert await lifecycle.resume_flow_instances(rt, tenant, flow) == lifecycle.FlowResumed(resumed=1, applied=1)
    assert (await instance(db_engine, b)).status == "completed"
    c = await start(rt, tenant, flow, participant="c")
    assert await lifecycle.exit_flow_instances(rt, tenant, flow, "") == 1
    row = await instance(db_engine, c)
    assert (row.status, row.exit_reason) == ("exited", "flow_archived")
    assert await step_statuses(db_engine, c) == [("start", "completed"), ("w", "cancelled")]


async def test_recovery_carries_a_flows_status_to_instances_that_missed_it(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER, ("w", "t_pause", {"seconds": 600})], [("start", "w")]))
    waiting = await start(rt, tenant, flow, participant="missed")

    async def flow_becomes(status: str) -> tuple[str, int, str | None]:
        # The API committed the status but its call to the engine never arrived.
        async with db_engine.begin() as conn:
            await conn.execute(text("UPDATE flows SET status = :s WHERE id = :f"), {"s": status, "f": flow})
        await recovery.recover_once(rt)
        row = await instance(db_engine, waiting)
        return row.status, row.run_revision, row.exit_reason

    before = (await instance(db_engine, waiting)).run_revision
    assert await flow_becomes("paused") == ("paused", before + 1, None)
    assert await flow_becomes("active") == ("waiting", before + 2, None)
    assert await flow_becomes("archived") == ("exited", before + 3, "flow_archived")
    assert await pending_waits(db_engine, waiting) == []
    assert (await lifecycle.reconcile_flow_holds(rt)) == lifecycle.FlowHoldsReconciled(0, 0, 0)


async def test_recovery_prunes_finished_instances_past_the_retention_with_their_steps(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER], []))
    old, recent, live = [await start(rt, tenant, flow, participant=p) for p in ("old", "recent", "live")]
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE flow_instances SET end_time = now() - interval '31 days' WHERE id = :i"), {"i": old}
        )
        await conn.execute(
            text("UPDATE flow_instances SET status = 'waiting', end_time = NULL WHERE id = :i"), {"i": live}
        )

    assert await recovery.prune_finished_instances(rt) >= 1

    async with db_engine.connect() as conn:
        left = set(
            (await conn.execute(text("SELECT id FROM flow_instances WHERE flow_id = :f"), {"f": flow})).scalars()
        )
        steps = (
            await conn.execute(text("SELECT count(*) FROM execution_steps WHERE instance_id = :i"), {"i": old})
        ).scalar()
    assert left == {recent, live}
    assert steps == 0


async def test_re_entry_never_holds_after_the_old_instances_were_pruned(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER], []), re_entry="never")
    first = await start(rt, tenant, flow, participant="once")
    assert (await instance(db_engine, first)).status == "completed"
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE flow_instances SET end_time = now() - interval '400 days' WHERE id = :i"), {"i": first}
        )
    assert await recovery.prune_finished_instances(rt) >= 1
    async with db_engine.connect() as conn:
        left = (
            await conn.execute(text("SELECT count(*) FROM flow_instances WHERE flow_id = :f"), {"f": flow})
        ).scalar()
    assert left == 0, "the old instance is gone"

    with pytest.raises(AlreadyExists):
        await start(rt, tenant, flow, participant="once")
    assert await start(rt, tenant, flow, participant="someone-else")


async def test_racing_first_entries_of_a_never_flow_that_ends_at_once_make_one_instance(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER], []), re_entry="never")

    async def enter() -> bool:
        try:
            await start(rt, tenant, flow, participant="racer")
        except AlreadyExists:
            return False
        return True

    outcomes = await asyncio.gather(*(enter() for _ in range(10)))

    assert outcomes.count(True) == 1
    async with db_engine.connect() as conn:
        count = (
            await conn.execute(text("SELECT count(*) FROM flow_instances WHERE flow_id = :f"), {"f": flow})
        ).scalar()
    assert count == 1, "each instance completes inside its own entry; the ledger still lets only one in"


async def test_a_resume_of_an_archived_flows_instance_exits_it_instead_of_running_it(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph([TRIGGER, ("w", "t_pause", {"seconds": 600}), ("s", "t_send", {})], [("start", "w"), ("w", "s")]),
    )
    instance_id = await start(rt, tenant, flow, participant="late")
    [wait] = await pending_waits(db_engine, instance_id)
    await make_due(db_engine, wait.id)
    async with db_engine.begin() as conn:  # archived, and the engine's ExitFlowInstances has not run yet
        await conn.execute(text("UPDATE flows SET status = 'archived' WHERE id = :f"), {"f": flow})

    outcome = await resumes.resume_one(rt, resumes.ResumeRequest(instance_id, wait.id, "timer"))

    assert not outcome.applied
    row = await instance(db_engine, instance_id)
    assert (row.status, row.exit_reason) == ("exited", "flow_archived")
    assert await step_statuses(db_engine, instance_id) == [("start", "completed"), ("w", "cancelled")], "s never ran"


async def test_archiving_exits_live_instances_in_batches(
    rt: Runtime, db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER, ("w", "t_pause", {"seconds": 600})], [("start", "w")]))
    ids = [await start(rt, tenant, flow, participant=f"p{n}") for n in range(7)]
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'archived' WHERE id = :f"), {"f": flow})
    monkeypatch.setattr(lifecycle, "EXIT_BATCH", 3)

    assert await lifecycle.exit_flow_instances(rt, tenant, flow, "") == 7

    assert {(await instance(db_engine, i)).status for i in ids} == {"exited"}
    assert [await pending_waits(db_engine, i) for i in ids] == [[]] * 7


async def test_migrate_all_moves_exits_and_rearms(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    v1 = graph([TRIGGER, ("w", "t_pause", {"seconds": 600}), ("gone", "t_pause", {"seconds": 600})], [("start", "w")])
    flow = await create_flow(db_engine, tenant, v1)
    moved = await start(rt, tenant, flow, participant="stay", entry_node_ids=("start",))
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flow_instances SET current_nodes = '[\"gone\"]' WHERE id = :i"), {"i": moved})
        await conn.execute(text("UPDATE waits SET node_id = 'gone' WHERE instance_id = :i"), {"i": moved})
    kept = await start(rt, tenant, flow, participant="move")
    [old_wait] = await pending_waits(db_engine, kept)
    v2 = graph([TRIGGER, ("w", "t_pause", {"seconds": 7200})], [("start", "w")])
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flow_versions SET status = 'superseded' WHERE flow_id = :f"), {"f": flow})
        await add_version(conn, tenant, flow, 2, v2, status="active")
        await conn.execute(text("UPDATE flows SET active_version_number = 2 WHERE id = :f"), {"f": flow})
    only_new = await migration.migrate_instances(
        rt, tenant, flow, from_version=0, to_version=2, strategy="new_entries_only"
    )
    assert (only_new.migrated, only_new.skipped) == (0, 2)
    report = await migration.migrate_instances(rt, tenant, flow, from_version=0, to_version=2, strategy="migrate_all")
    assert (report.migrated, report.exited, report.failures) == (1, 1, [])
    gone = await instance(db_engine, moved)
    assert (gone.status, gone.exit_reason) == ("exited", "node_removed_in_new_version")
    row = await instance(db_engine, kept)
    assert row.version_number == 2
    [new_wait] = await pending_waits(db_engine, kept)
    assert new_wait.id == old_wait.id
    assert (new_wait.fire_time - old_wait.fire_time).total_seconds() == pytest.approx(6600, abs=1)
    with pytest.raises(FailedPrecondition):
        await migration.migrate_instances(rt, tenant, flow, from_version=2, to_version=2, strategy="migrate_all")


async def test_a_batch_of_events_routes_in_order_and_a_missing_event_answers_zeros(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "tick"}), ("s", "t_send", {})],
        [("start", "a"), ("a", "s", "event_received")],
    )
    flow = await create_flow(db_engine, tenant, g)
    waiting = [await start(rt, tenant, flow, participant=f"b{n}") for n in range(3)]
    batch = [
        events.EventToRoute(
            tenant, await store_event(db_engine, tenant, f"b{n}", "tick", {"n": n}), f"b{n}", "tick", {"n": n}
        )
        for n in range(3)
    ]
    batch.insert(1, events.EventToRoute(tenant, uuid.uuid4(), "b9", "tick", {}))
    results = await events.route_events(rt, batch)
    assert [r.resumed for r in results] == [1, 0, 1, 1]
    assert [r.instance_ids for r in results] == [(str(waiting[0]),), (), (str(waiting[1]),), (str(waiting[2]),)]
    for n, instance_id in enumerate(waiting):
        row = await instance(db_engine, instance_id)
        assert (row.status, row.context["event"]) == ("completed", {"n": n})


async def test_an_event_whose_routing_fails_after_its_claim_leaves_its_batch_and_itself_unwritten(
    engine_role_db: AsyncEngine, database_url: str, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "tick"}), ("s", "t_send", {})],
        [("start", "a"), ("a", "s", "event_received")],
    )
    good, broken = await create_flow(db_engine, tenant, g), await create_flow(db_engine, tenant, g)
    starter = make_runtime(engine_role_db, database_url)
    try:
        ok_before = await start(starter, tenant, good, participant="c0")
        stuck = await start(starter, tenant, broken, participant="c1")
        ok_after = await start(starter, tenant, good, participant="c2")
    finally:
        await starter.close()
    # The broken flow's version is gone: resuming its instance raises NOT_FOUND after the event was claimed and
    # the wait fired (a runtime whose graph cache is cold, as after a restart).
    async with db_engine.begin() as conn:
        await conn.execute(text("DELETE FROM flow_versions WHERE flow_id = :f"), {"f": broken})
    batch = [
        events.EventToRoute(tenant, await store_event(db_engine, tenant, f"c{n}", "tick", {}), f"c{n}", "tick", {})
        for n in range(3)
    ]
    router = make_runtime(engine_role_db, database_url)
    try:
        results = await events.route_events(router, batch)
    finally:
        await router.close()

    assert [r.instance_ids for r in results] == [(str(ok_before),), (), (str(ok_after),)]
    assert (await instance(db_engine, ok_before)).status == "completed"
    assert (await instance(db_engine, ok_after)).status == "completed"
    # Nothing of the failed routing was committed: the wait is still pending, the event still to be routed.
    assert [wait.status for wait in await pending_waits(db_engine, stuck)] == ["pending"]
    async with db_engine.connect() as conn:
        routed = await conn.scalar(text("SELECT routed_time FROM events WHERE id = :e"), {"e": batch[1].event_id})
    assert routed is None


async def test_a_run_holds_the_instance_row_lock_until_it_commits(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER, ("w", "t_pause", {"seconds": -1})], [("start", "w")]))
    instance_id = await start(rt, tenant, flow)
    [wait] = await pending_waits(db_engine, instance_id)
    async with db_engine.begin() as conn:
        locked = await lock_instance(conn, instance_id)
        assert locked is not None
        fired = await fire_wait(conn, wait.id, instance_id, by="timer", now=rt.now(), meta={})
        assert fired is not None
        async with db_engine.connect() as other:
            grabbed = await other.execute(
                text("SELECT id FROM flow_instances WHERE id = :i FOR UPDATE SKIP LOCKED"), {"i": instance_id}
            )
            assert grabbed.first() is None  # still locked by the open run
            seen = await other.execute(text("SELECT status FROM waits WHERE id = :w"), {"w": wait.id})
            assert seen.scalar_one() == "pending"  # the fire is not visible before the commit
        await conn.rollback()
    assert [w.id for w in await pending_waits(db_engine, instance_id)] == [wait.id]


async def test_an_event_for_a_paused_flow_is_held_and_applied_on_resume(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "paid"}), ("yes", "t_send", {}), ("w", "t_pause", {"seconds": 600})],
        [("start", "a"), ("a", "yes", "event_received"), ("start", "w")],
    )
    flow = await create_flow(db_engine, tenant, g)
    instance_id = await start(rt, tenant, flow, participant="held")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'paused' WHERE id = :f"), {"f": flow})
    # Not yet marked paused by PauseFlowInstances: the flow's status alone holds the resume.
    paid = await store_event(db_engine, tenant, "held", "paid", {"amount": 3})
    assert (await route(rt, tenant, paid, "held", "paid", {"amount": 3})).resumed == 0
    assert sorted((await instance(db_engine, instance_id)).current_nodes) == ["a", "w"]
    assert await lifecycle.pause_flow_instances(rt, tenant, flow) == 1
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'active' WHERE id = :f"), {"f": flow})
    assert await lifecycle.resume_flow_instances(rt, tenant, flow) == lifecycle.FlowResumed(resumed=1, applied=1)
    row = await instance(db_engine, instance_id)
    assert (row.status, row.current_nodes) == ("waiting", ["w"])
    assert row.context["event"] == {"amount": 3}
    assert row.context["accumulated"]["a"]["branch"] == "event_received"


async def test_recovery_applies_an_event_held_during_a_pause_whose_release_was_cut_off(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "paid"}), ("yes", "t_send", {})],
        [("start", "a"), ("a", "yes", "event_received")],
    )
    flow = await create_flow(db_engine, tenant, g)
    instance_id = await start(rt, tenant, flow, participant="cut-off")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flows SET status = 'paused' WHERE id = :f"), {"f": flow})
    paid = await store_event(db_engine, tenant, "cut-off", "paid", {"amount": 5})
    assert (await route(rt, tenant, paid, "cut-off", "paid", {"amount": 5})).resumed == 0, "held"
    async with db_engine.begin() as conn:  # resumed; the engine's call that applies held events never came
        await conn.execute(text("UPDATE flows SET status = 'active' WHERE id = :f"), {"f": flow})

    await recovery.recover_once(rt)

    row = await instance(db_engine, instance_id)
    assert (row.status, row.context["event"]) == ("completed", {"amount": 5})


async def test_events_racing_the_arming_of_their_waits_are_never_lost_nor_applied_twice(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    g = graph(
        [TRIGGER, ("a", "t_await", {"event_type": "race"}), ("s", "t_send", {})],
        [("start", "a"), ("a", "s", "event_received")],
    )
    flow = await create_flow(db_engine, tenant, g)

    async def event_now(participant: str) -> None:
        event_id = await store_event(db_engine, tenant, participant, "race", {"who": participant})
        await route(rt, tenant, event_id, participant, "race", {"who": participant})

    participants = [f"racer{n}" for n in range(30)]
    started = await asyncio.gather(
        *(start(rt, tenant, flow, participant=p) for p in participants),
        *(event_now(p) for p in participants),
    )
    instance_ids = started[: len(participants)]
    async with db_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT i.status, i.context->'event'->>'who' AS who, "
                "(SELECT count(*) FROM execution_steps s WHERE s.instance_id = i.id AND s.node_id = 'a' "
                " AND s.status = 'completed') AS resumed, "
                "(SELECT count(*) FROM deliveries d WHERE d.instance_id = i.id) AS sent "
                "FROM flow_instances i WHERE i.id = ANY(CAST(:ids AS uuid[])) ORDER BY i.participant_id"
            ),
            {"ids": [str(i) for i in instance_ids]},
        )
        outcomes = [(r.status, r.who, r.resumed, r.sent) for r in rows]
    assert outcomes == [("completed", p, 1, 1) for p in sorted(participants)]


async def _v2_of_a_pause_flow(db_engine: AsyncEngine, rt: Runtime, participants: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A flow with `participants` instances waiting on version 1, and a version 2 made active."""
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, graph([TRIGGER, ("w", "t_pause", {"seconds": 600})], [("start", "w")]))
    for n in range(participants):
        await start(rt, tenant, flow, participant=f"p{n}")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE flow_versions SET status = 'superseded' WHERE flow_id = :f"), {"f": flow})
        v2 = graph([TRIGGER, ("w", "t_pause", {"seconds": 900})], [("start", "w")])
        await add_version(conn, tenant, flow, 2, v2, status="active")
        await conn.execute(text("UPDATE flows SET active_version_number = 2 WHERE id = :f"), {"f": flow})
    return tenant, flow


async def _job_of(db_engine: AsyncEngine, flow: uuid.UUID) -> Any:
    async with db_engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT * FROM flow_migrations WHERE flow_id = :f ORDER BY create_time LIMIT 1"), {"f": flow}
            )
        ).one()


async def test_migrate_all_answers_in_progress_and_goes_on_in_bounded_batches(
    engine_role_db: AsyncEngine, database_url: str, db_engine: AsyncEngine
) -> None:
    rt = make_runtime(engine_role_db, database_url, migration_batch_size=2, migration_call_seconds=0)
    try:
        tenant, flow = await _v2_of_a_pause_flow(db_engine, rt, 7)

        report = await migration.migrate_instances(
            rt, tenant, flow, from_version=0, to_version=2, strategy="migrate_all"
        )

        assert (report.migrated, report.in_progress) == (2, True)  # one batch within the call's budget
        job = await eventually(
            lambda: _job_of(db_engine, flow), until=lambda row: row.status == "done", what="the migration finished"
        )
        assert (job.migrated, job.exited, job.failed) == (7, 0, 0)
        async with db_engine.connect() as conn:
            versions = (
                (
                    await conn.execute(
                        text("SELECT DISTINCT version_number FROM flow_instances WHERE flow_id = :f"), {"f": flow}
                    )
                )
                .scalars()
                .all()
            )
        assert versions == [2]
    finally:
        await rt.close()


async def test_a_migration_whose_replica_stopped_is_taken_up_by_recovery(
    engine_role_db: AsyncEngine, database_url: str, db_engine: AsyncEngine
) -> None:
    rt = make_runtime(engine_role_db, database_url, migration_batch_size=3, migration_call_seconds=0)
    try:
        tenant, flow = await _v2_of_a_pause_flow(db_engine, rt, 5)
        async with db_engine.begin() as conn:  # a job another replica started, whose lease ran out
            await conn.execute(
                text(
                    "INSERT INTO flow_migrations (tenant_id, flow_id, from_version_number, to_version_number, "
                    "lease_until) VALUES (:t, :f, 0, 2, now() - interval '1 second')"
                ),
                {"t": tenant, "f": flow},
            )

        assert await migration.continue_migrations(rt) == 1

        job = await eventually(
            lambda: _job_of(db_engine, flow), until=lambda row: row.status == "done", what="the migration finished"
        )
        assert job.migrated == 5
        async with db_engine.begin() as conn:  # now a migration to version 3 runs (on another replica)
            await conn.execute(
                text(
                    "INSERT INTO flow_migrations (tenant_id, flow_id, from_version_number, to_version_number, "
                    "lease_until) VALUES (:t, :f, 0, 3, now() + interval '1 hour')"
                ),
                {"t": tenant, "f": flow},
            )
        with pytest.raises(FailedPrecondition) as refused:  # one migration per flow at a time
            await migration.migrate_instances(rt, tenant, flow, from_version=0, to_version=2, strategy="migrate_all")
        assert refused.value.reason == "MIGRATION_IN_PROGRESS"
    finally:
        await rt.close()
