"""EngineService RPCs of instance execution: start, resume, route events, cancel, pause, migrate."""

from __future__ import annotations

from kalcifer_engine.deps import EngineDeps


class RuntimeRpcs:
    """StartInstance, ResumeInstance(s), RouteEvent(s), CancelInstance, MigrateInstances, *FlowInstances."""

    deps: EngineDeps
