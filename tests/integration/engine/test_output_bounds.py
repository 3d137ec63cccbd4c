"""A node's output is bounded like a tenant's payloads (`MAX_JSON_NESTING`): one nested deeper fails its step
with the reason, instead of entering the context where it would make every message carrying that context
(GetInstance, ListInstances, the engine's own calls) undecodable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kalcifer_common.structs import MAX_JSON_NESTING
from kalcifer_engine.runtime.core import Runtime
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import create_flow, create_tenant, graph, instance, make_runtime, start
from tests.support.payloads import nested


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(engine_role_db, database_url)
    yield runtime
    await runtime.close()


async def test_an_output_nested_past_the_limit_fails_its_step_and_one_at_the_limit_completes(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    # custom_code answers {"result": <the expression's value>}: one level more than the value itself.
    copying = graph(
        [("start", "event_entry", {"event_type": "go"}), ("calc", "custom_code", {"expression": "deep"})],
        [("start", "calc")],
    )
    flow = await create_flow(db_engine, tenant, copying)
    at_limit = nested(MAX_JSON_NESTING - 1)
    fine = await instance(db_engine, await start(rt, tenant, flow, "fine", context={"deep": at_limit}))
    assert fine.status == "completed"
    assert fine.context["accumulated"]["calc"] == {"result": at_limit}
    deep = await instance(db_engine, await start(rt, tenant, flow, "deep", context={"deep": nested(MAX_JSON_NESTING)}))
    assert deep.status == "failed"
    assert deep.exit_reason == (
        f"node 'calc' (custom_code) failed: its output nests objects and arrays more than {MAX_JSON_NESTING} deep"
    )
    assert "calc" not in deep.context.get("accumulated", {})
