"""`tenant_registry.registry_for` on the real database: built-ins plus the tenant's webhook types, cached briefly,
dropped on change, never another tenant's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from kalcifer_common.db.models import NodeType as NodeTypeRow
from kalcifer_common.db.models import Tenant
from kalcifer_common.db.session import create_engine, create_sessionmaker
from kalcifer_common.settings import EngineSettings
from kalcifer_engine import tenant_registry
from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.nodes.base import NodeCategory
from kalcifer_engine.nodes.registry import builtin_registry
from kalcifer_engine.nodes.webhook import WebhookNodeType
from kalcifer_engine.repo.node_types import NodeTypeStore
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@pytest.fixture
async def deps(database_url: str) -> AsyncIterator[EngineDeps]:
    """The engine's dependencies as the engine connects: as its own role."""
    db = create_engine(database_url, role=EngineSettings().database_role, pool_size=2)
    yield EngineDeps(settings=EngineSettings(), db=db, sessions=create_sessionmaker(db), registry=builtin_registry())
    await db.dispose()


async def _tenant(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    async with sessions.begin() as session:
        tenant = Tenant(id=uuid.uuid4(), name="registry")
        session.add(tenant)
    return tenant.id


def _hook(key: str = "score_lead", url: str = "https://crm.example.com/score") -> WebhookNodeType:
    return WebhookNodeType(
        key=key,
        category=NodeCategory.CONDITION,
        description="",
        config_schema={"type": "object"},
        branches=["hot", "cold"],
        endpoint_url=url,
    )


async def test_a_tenants_types_join_the_builtins_for_that_tenant_only(
    deps: EngineDeps, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mine, other = await _tenant(sessions), await _tenant(sessions)
    await NodeTypeStore(sessions).upsert(mine, _hook())
    registry = await tenant_registry.registry_for(deps, mine)
    found = registry.get("score_lead")
    assert isinstance(found, WebhookNodeType)
    assert (found.endpoint_url, found.branches({}), found.timeout_ms) == (
        "https://crm.example.com/score",
        ("hot", "cold"),
        10_000,
    )
    assert len(registry) == len(deps.registry) + 1
    assert "score_lead" not in await tenant_registry.registry_for(deps, other)
    assert (await tenant_registry.registry_for(deps, other)) is deps.registry, "no copy for tenants without types"


async def test_the_cache_serves_until_invalidated_or_expired(
    deps: EngineDeps, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = await _tenant(sessions)
    await NodeTypeStore(sessions).upsert(tenant_id, _hook())
    first = await tenant_registry.registry_for(deps, tenant_id)
    async with sessions.begin() as session:
        await session.execute(delete(NodeTypeRow).where(NodeTypeRow.tenant_id == tenant_id))
    assert await tenant_registry.registry_for(deps, tenant_id) is first, "cached within the TTL"
    tenant_registry.invalidate(deps, tenant_id)
    assert "score_lead" not in await tenant_registry.registry_for(deps, tenant_id)

    await NodeTypeStore(sessions).upsert(tenant_id, _hook(url="https://v2.example.com/score"))
    monkeypatch.setattr(tenant_registry, "TTL_SECONDS", 0.0)
    tenant_registry.invalidate(deps, tenant_id)
    await tenant_registry.registry_for(deps, tenant_id)
    refreshed = (await tenant_registry.registry_for(deps, tenant_id)).get("score_lead")
    assert isinstance(refreshed, WebhookNodeType)
    assert refreshed.endpoint_url == "https://v2.example.com/score"


async def test_the_cache_is_bounded(
    deps: EngineDeps, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenant_registry, "MAX_TENANTS", 2)
    tenants = [await _tenant(sessions) for _ in range(3)]
    for tenant_id in tenants:
        await tenant_registry.registry_for(deps, tenant_id)
    cached = tenant_registry._cache_of(deps).entries
    assert list(cached) == tenants[1:], "least recently used out first"


async def test_a_stored_type_that_shadows_a_builtin_or_no_longer_validates_is_left_out(
    deps: EngineDeps, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = await _tenant(sessions)
    async with sessions.begin() as session:
        session.add(
            NodeTypeRow(tenant_id=tenant_id, key="send_email", category="action", endpoint_url="https://x.example.com/")
        )
        session.add(
            NodeTypeRow(tenant_id=tenant_id, key="plain_http", category="action", endpoint_url="ftp://x.example.com/")
        )
    registry = await tenant_registry.fresh_registry_for(deps, tenant_id)
    assert registry.get("send_email") is deps.registry.get("send_email")
    assert "plain_http" not in registry
