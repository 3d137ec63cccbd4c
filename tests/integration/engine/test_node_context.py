"""The real NodeContext: every effect a node asks for lands in the run's transaction, with the step (SPEC 6.1)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from kalcifer_engine.nodes.base import Completed, NodeCategory, NodeResult, NodeType
from kalcifer_engine.nodes.schema import object_schema
from kalcifer_engine.runtime import recovery, starts
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import create_flow, create_tenant, graph, make_runtime


class Probe(NodeType):
    """Uses every NodeContext method once and reports what it saw."""

    key = "t_probe"
    category = NodeCategory.ACTION
    description = "probe"
    config_schema = object_schema(description, {})

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        await ctx.update_profile({"tier": "gold", "legacy": None})
        await ctx.add_tag("vip")
        await ctx.add_tag("vip")
        await ctx.record_conversion("purchase", Decimal("9.50"))
        await ctx.record_conversion("onboarded", None, kind="goal")
        key = await ctx.create_delivery("sms", "otp", {"n": 1})
        return Completed(
            {
                "key": key,
                "sms_since_an_hour": await ctx.count_deliveries("sms", ctx.now - timedelta(hours=1)),
                "any_channel": await ctx.count_deliveries("any", ctx.now - timedelta(hours=1)),
                "variant": await ctx.sticky_variant([("a", 1.0), ("b", 1.0)]),
                "variant_again": await ctx.sticky_variant([("a", 0.0), ("b", 1.0)]),
                "in_gold": await ctx.in_segment("gold"),
                "in_unknown": await ctx.in_segment(str(uuid.uuid4())),
                "email_ok": await ctx.preference("email"),
                "sms_ok": await ctx.preference("sms"),
                "tier_seen": ctx.lookup("customer.attributes.tier"),
                "missing": ctx.lookup("customer.nope"),
                "doubled": await ctx.evaluate("score * 2"),
                "with_extra": await ctx.evaluate("event.n + 1", {"event": {"n": 41}}),
                "ids": [str(ctx.tenant_id), str(ctx.flow_id), str(ctx.instance_id), ctx.participant_id, ctx.node_id],
                "attempt": ctx.attempt,
            }
        )


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(engine_role_db, database_url)
    runtime.deps.registry.register(Probe())
    yield runtime
    await runtime.close()


async def test_every_context_effect_commits_with_the_step(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    async with db_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (tenant_id, external_id, attributes, preferences) "
                'VALUES (:t, \'c1\', \'{"tier": "silver", "legacy": "x"}\', \'{"sms": false}\')'
            ),
            {"t": tenant},
        )
        rules = json.dumps([{"field": "attributes.tier", "operator": "eq", "value": "gold"}])
        await conn.execute(
            text("INSERT INTO segments (tenant_id, name, match, rules) VALUES (:t, 'gold', 'all', CAST(:r AS jsonb))"),
            {"t": tenant, "r": rules},
        )
    flow = await create_flow(
        db_engine,
        tenant,
        graph([("start", "event_entry", {"event_type": "go"}), ("p", "t_probe", {})], [("start", "p")]),
    )
    effects = Effects()
    async with db_engine.begin() as conn:
        request = starts.StartRequest(tenant, flow, "c1", {"score": 21})
        instance_id = await starts.start_instance(rt, conn, request, effects, now=rt.now())
    async with db_engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM flow_instances WHERE id = :i"), {"i": instance_id})).one()
        customer = (await conn.execute(text("SELECT * FROM customers WHERE tenant_id = :t"), {"t": tenant})).one()
        kinds = (
            await conn.execute(
                text("SELECT kind, name, revenue FROM conversions WHERE instance_id = :i ORDER BY kind"),
                {"i": instance_id},
            )
        ).all()
    seen = row.context["accumulated"]["p"]
    assert row.status == "completed"
    # The profile at start, then the update: a null removes the attribute, as UpsertCustomer does.
    assert row.context["customer"]["attributes"] == {"tier": "gold"}
    assert seen["key"] == f"{instance_id}:p:a1:v1"
    assert (seen["sms_since_an_hour"], seen["any_channel"]) == (1, 1)
    assert seen["variant"] == seen["variant_again"]
    assert (seen["in_gold"], seen["in_unknown"]) == (True, False)
    assert (seen["email_ok"], seen["sms_ok"]) == (True, False)
    assert seen["tier_seen"] == [True, "gold"]
    assert seen["missing"] == [False, None]
    assert (seen["doubled"], seen["with_extra"]) == (42, 42)
    assert seen["ids"] == [str(tenant), str(flow), str(instance_id), "c1", "p"]
    assert seen["attempt"] == 1
    assert customer.attributes == {"tier": "gold"}
    assert customer.tags == ["vip"]
    assert customer.update_time > customer.create_time, "segment_entry finds the changed customers by update_time"
    assert [(k.kind, k.name, k.revenue) for k in kinds] == [
        ("conversion", "purchase", Decimal("9.50")),
        ("goal", "onboarded", None),
    ]


async def test_recovery_routes_unrouted_events_and_fires_long_overdue_waits(
    db_engine: AsyncEngine, engine_role_db: AsyncEngine, database_url: str
) -> None:
    rt = make_runtime(engine_role_db, database_url, recovery_event_seconds=0.001, recovery_overdue_seconds=0.001)
    tenant = await create_tenant(db_engine)
    starter = await create_flow(
        db_engine,
        tenant,
        graph([("start", "event_entry", {"event_type": "lost"}), ("w", "t_pause", {"seconds": -5})], [("start", "w")]),
    )
    async with db_engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO events (tenant_id, participant_id, event_type) VALUES (:t, 'orphan', 'lost')"),
            {"t": tenant},
        )
    # The engine "died" before routing the stored event; recovery routes it, which starts the flow; the started
    # instance's already-due timer has no scheduler job, so the next pass fires it too.
    first = await recovery.recover_once(rt)
    assert first["unrouted_events"] >= 1
    await recovery.recover_once(rt)
    async with db_engine.connect() as conn:
        statuses = (
            (await conn.execute(text("SELECT status FROM flow_instances WHERE flow_id = :f"), {"f": starter}))
            .scalars()
            .all()
        )
        routed = (
            await conn.execute(
                text("SELECT count(*) FROM events WHERE tenant_id = :t AND routed_time IS NULL"), {"t": tenant}
            )
        ).scalar_one()
    assert statuses == ["completed"]
    assert routed == 0
    await rt.close()


async def test_recovery_reruns_an_instance_left_running(
    db_engine: AsyncEngine, engine_role_db: AsyncEngine, database_url: str
) -> None:
    rt = make_runtime(engine_role_db, database_url, recovery_running_seconds=0.001)
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph(
            [("start", "event_entry", {"event_type": "go"}), ("s", "t_send", {}), ("w", "t_pause", {"seconds": 600})],
            [("start", "s"), ("s", "w")],
        ),
    )
    async with db_engine.begin() as conn:
        instance_id = (
            await conn.execute(
                text(
                    "INSERT INTO flow_instances (tenant_id, flow_id, version_number, participant_id, status, "
                    "current_nodes, update_time) VALUES (:t, :f, 1, 'stuck', 'running', '[\"s\"]', "
                    "now() - interval '1 hour') RETURNING id"
                ),
                {"t": tenant, "f": flow},
            )
        ).scalar_one()
    assert (await recovery.recover_once(rt))["stuck_instances"] >= 1
    async with db_engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM flow_instances WHERE id = :i"), {"i": instance_id})).one()
        sends = (
            await conn.execute(text("SELECT count(*) FROM deliveries WHERE instance_id = :i"), {"i": instance_id})
        ).scalar_one()
    assert (row.status, row.current_nodes, sends) == ("waiting", ["w"], 1)
    await rt.close()
