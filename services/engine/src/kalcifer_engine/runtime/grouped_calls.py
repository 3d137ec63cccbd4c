"""The engine's single calls that share transactions (`group_commit`), one set per process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.events import EventToRoute, RouteResult, grouped_routes
from kalcifer_engine.runtime.group_commit import GroupCommit
from kalcifer_engine.runtime.starts import StartRequest, grouped_starts


@dataclass(frozen=True)
class GroupedCalls:
    """StartInstance (without a request_id) and RouteEvent."""

    starts: GroupCommit[StartRequest, uuid.UUID]
    routes: GroupCommit[EventToRoute, RouteResult]

    @classmethod
    def over(cls, rt: Runtime) -> GroupedCalls:
        """Both, over the process's runtime."""
        return cls(starts=grouped_starts(rt), routes=grouped_routes(rt))
