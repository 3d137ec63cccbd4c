"""`kalcifer.engine.v1.EngineService`: the registry mixin and the runtime mixin over the generated base.

Methods neither mixin defines fall through to the generated base and answer `UNIMPLEMENTED`.
"""

from __future__ import annotations

from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common.rpc.errors import map_errors

from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.grpc.registry_rpcs import RegistryRpcs
from kalcifer_engine.grpc.runtime_rpcs import RuntimeRpcs


@map_errors
class EngineServicer(RegistryRpcs, RuntimeRpcs, engine_pb2_grpc.EngineServiceServicer):
    """Every EngineService RPC; errors map to precise statuses (`map_errors`)."""

    def __init__(self, deps: EngineDeps) -> None:
        self.deps = deps
