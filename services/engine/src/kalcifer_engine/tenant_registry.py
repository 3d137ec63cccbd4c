"""The node registry one tenant's graphs run against: the built-ins plus that tenant's webhook node types.

Runs look a tenant's registry up on every node they execute, so it is cached per process for a few seconds
(bounded, least recently used out first). Registering or deleting a type through this process drops the
tenant's entry at once; another replica sees the change within `TTL_SECONDS`. Validation, which must agree with
what was just registered on any replica, reads the database directly (`fresh_registry_for`).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Final
from weakref import WeakKeyDictionary

from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.repo.node_types import NodeTypeStore

TTL_SECONDS: Final = 5.0
MAX_TENANTS: Final = 1024


class _TenantRegistries:
    """(registry, expiry) per tenant for one set of built-ins; bounded LRU with a TTL."""

    def __init__(self) -> None:
        self.entries: OrderedDict[uuid.UUID, tuple[NodeRegistry, float]] = OrderedDict()

    def get(self, tenant_id: uuid.UUID) -> NodeRegistry | None:
        entry = self.entries.get(tenant_id)
        if entry is None:
            return None
        registry, expires = entry
        if expires <= time.monotonic():
            del self.entries[tenant_id]
            return None
        self.entries.move_to_end(tenant_id)
        return registry

    def put(self, tenant_id: uuid.UUID, registry: NodeRegistry) -> None:
        self.entries[tenant_id] = (registry, time.monotonic() + TTL_SECONDS)
        self.entries.move_to_end(tenant_id)
        while len(self.entries) > MAX_TENANTS:
            self.entries.popitem(last=False)


# Keyed by the built-in registry (one per engine process; tests may build several).
_caches: WeakKeyDictionary[NodeRegistry, _TenantRegistries] = WeakKeyDictionary()


def _cache_of(deps: EngineDeps) -> _TenantRegistries:
    cache = _caches.get(deps.registry)
    if cache is None:
        cache = _caches[deps.registry] = _TenantRegistries()
    return cache


async def fresh_registry_for(deps: EngineDeps, tenant_id: uuid.UUID) -> NodeRegistry:
    """Built-ins plus the tenant's webhook types as stored right now (also refreshes the cache)."""
    tenant_types = [t for t in await NodeTypeStore(deps.sessions).load(tenant_id) if t.key not in deps.registry]
    registry = deps.registry.with_extra(tenant_types) if tenant_types else deps.registry
    _cache_of(deps).put(tenant_id, registry)
    return registry


async def registry_for(deps: EngineDeps, tenant_id: uuid.UUID) -> NodeRegistry:
    """Built-ins plus the tenant's webhook types, at most `TTL_SECONDS` old. Never another tenant's types."""
    cached = _cache_of(deps).get(tenant_id)
    if cached is not None:
        return cached
    return await fresh_registry_for(deps, tenant_id)


def invalidate(deps: EngineDeps, tenant_id: uuid.UUID) -> None:
    """Forget the tenant's cached registry (after its types changed in this process)."""
    _cache_of(deps).entries.pop(tenant_id, None)
