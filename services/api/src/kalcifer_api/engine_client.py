"""The API's client of `kalcifer.engine.v1.EngineService`, over a channel that carries the internal token."""

from __future__ import annotations

import grpc
from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.settings import ApiSettings


class EngineClient:
    """One channel for the process; `stub` is the generated EngineService stub. Errors the engine answers with
    reach the caller unchanged through `map_errors` (see `kalcifer_common.rpc.errors.relayed`)."""

    def __init__(self, settings: ApiSettings) -> None:
        self._channel: grpc.aio.Channel = internal_channel(
            settings.engine_addr,
            token=settings.kalcifer_internal_token,
            timeout_seconds=settings.rpc_timeout_seconds,
        )
        self.stub = engine_pb2_grpc.EngineServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel (at shutdown)."""
        await self._channel.close(grace=None)
