"""What the engine's RPC handlers share: settings, the database, the node registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kalcifer_common.settings import EngineSettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kalcifer_engine.nodes.registry import NodeRegistry

if TYPE_CHECKING:
    from kalcifer_engine.runtime.core import Runtime
    from kalcifer_engine.runtime.grouped_calls import GroupedCalls


@dataclass
class EngineDeps:
    """Built once by the composition root (`app.py`) and handed to every servicer mixin."""

    settings: EngineSettings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: NodeRegistry
    # Instance execution (graph cache, scheduler client); built by the composition root or on first use.
    runtime: Runtime | None = None
    # StartInstance's and RouteEvent's group commits over that runtime; built on first use.
    grouped: GroupedCalls | None = None
