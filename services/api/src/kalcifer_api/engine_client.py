"""The API's client of `kalcifer.engine.v1.EngineService`, over a channel that carries the internal token.

Every call here is made outside any database transaction of the API: graphs are validated before the write that
stores or publishes them, and a flow's new status is carried to its instances after it committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import grpc
import stamina
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import flow_pb2
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.graphs import graph_from_json
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.settings import ApiSettings
from kalcifer_common.statuses import FLOW_ARCHIVED_EXIT_REASON, FlowStatus

from kalcifer_api.engine_batches import batched_routes, batched_starts

_log = get_logger(__name__)

# Engine answers worth another attempt: it is restarting, overloaded or slow. Anything else is final.
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


def _retryable(error: Exception) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _RETRYABLE


def _naming_the_node(violation: flow_pb2.GraphViolation) -> str:
    """The description, led by the node's id when it does not name it already (field paths only index nodes)."""
    quoted = json.dumps(violation.node_id)  # how the engine quotes ids in its descriptions
    if violation.node_id and quoted not in violation.description:
        return f"node {quoted}: {violation.description}"
    return violation.description


class EngineClient:
    """One channel for the process; `stub` is the generated EngineService stub. Errors the engine answers with
    reach the caller unchanged through `map_errors` (see `kalcifer_common.rpc.errors.relayed`)."""

    def __init__(self, settings: ApiSettings) -> None:
        self._channel: grpc.aio.Channel = internal_channel(
            settings.engine_addr,
            token=settings.kalcifer_internal_token,
            timeout_seconds=settings.rpc_timeout_seconds,
            tls=settings.tls(),
        )
        self.stub = engine_pb2_grpc.EngineServiceStub(self._channel)
        # TriggerFlow's starts and IngestEvent's routes, sent together (engine_batches.py).
        self.starts = batched_starts(self.stub, in_flight=settings.engine_starts_in_flight)
        self.routes = batched_routes(self.stub, in_flight=settings.engine_routes_in_flight)

    async def close(self) -> None:
        """Close the channel (at shutdown)."""
        await self._channel.close(grace=None)

    async def require_valid_graph(self, tenant_id: uuid.UUID, graph_json: Mapping[str, Any]) -> None:
        """INVALID_ARGUMENT naming every violation the engine finds in `graph_json` (one field violation each)."""
        answer = await self.stub.ValidateGraph(
            engine_pb2.ValidateGraphRequest(graph=graph_from_json(graph_json), tenant_id=str(tenant_id))
        )
        if not answer.valid:
            raise InvalidArgument(
                [FieldViolation(v.field, _naming_the_node(v)) for v in answer.violations],
                message=f"the graph has {len(answer.violations)} violation(s): "
                + "; ".join(f"{v.field}: {v.description}" for v in answer.violations[:5]),
            )

    @stamina.retry(on=_retryable, attempts=4, wait_initial=0.1, wait_max=1.0, timeout=30.0)
    async def _tell(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, status: FlowStatus) -> None:
        tenant, flow = str(tenant_id), str(flow_id)
        if status == FlowStatus.PAUSED:
            await self.stub.PauseFlowInstances(engine_pb2.PauseFlowInstancesRequest(tenant_id=tenant, flow_id=flow))
        elif status == FlowStatus.ACTIVE:
            await self.stub.ResumeFlowInstances(engine_pb2.ResumeFlowInstancesRequest(tenant_id=tenant, flow_id=flow))
        elif status == FlowStatus.ARCHIVED:
            await self.stub.ExitFlowInstances(
                engine_pb2.ExitFlowInstancesRequest(tenant_id=tenant, flow_id=flow, reason=FLOW_ARCHIVED_EXIT_REASON)
            )

    async def carry_to_instances(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, status: str) -> None:
        """After a flow's new `status` committed: have the engine bring the flow's instances in line with it.

        Retried while the engine is unavailable or slow (4 attempts, backoff up to 1 s). The flow's status is
        already committed, so a call that still fails is logged, not raised: the engine's recovery applies the same
        step within its `RECOVERY_INTERVAL_SECONDS`.
        """
        try:
            await self._tell(tenant_id, flow_id, FlowStatus(status))
        except grpc.aio.AioRpcError as error:
            _log.warning(
                "the engine did not apply a flow's status to its instances; its recovery will",
                tenant_id=str(tenant_id),
                flow_id=str(flow_id),
                status=status,
                code=error.code().name,
                details=error.details(),
            )
