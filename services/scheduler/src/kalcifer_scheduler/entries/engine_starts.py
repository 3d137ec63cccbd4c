"""Asking the engine to start an instance for an entry, and what its answer means to the caller."""

from __future__ import annotations

import uuid
from enum import StrEnum

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.logging import get_logger

_log = get_logger(__name__)


class StartOutcome(StrEnum):
    """The engine's answer to one StartInstance of an entry."""

    STARTED = "started"
    # ALREADY_EXISTS: the participant is in (a live instance, or `never` and the entry ledger knows them).
    ALREADY_IN = "already_in"
    # Anything else (engine unreachable, flow no longer active, ...), logged: stop asking for this entry this run.
    FAILED = "failed"


async def start_instance(
    engine: engine_pb2_grpc.EngineServiceAsyncStub,
    *,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    participant_id: str,
    entry_node_id: str,
    request_id: str,
) -> StartOutcome:
    """StartInstance at `entry_node_id` (every trigger node when empty) under `request_id`, which names the entry:
    a retry of the same entry replays the engine's first answer instead of starting a second instance."""
    request = engine_pb2.StartInstanceRequest(
        tenant_id=str(tenant_id),
        flow_id=str(flow_id),
        participant_id=participant_id,
        entry_node_id=entry_node_id,
        request_id=request_id,
    )
    try:
        await engine.StartInstance(request)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.ALREADY_EXISTS:
            return StartOutcome.ALREADY_IN
        _log.warning("entry not started", flow_id=str(flow_id), code=error.code().name, details=error.details())
        return StartOutcome.FAILED
    return StartOutcome.STARTED
