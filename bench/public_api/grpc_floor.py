"""The floor under TriggerFlow: the suite's two Python gRPC hops with no work behind them.

`two_hops()` starts two processes: one serves `EngineService.StartInstance`, answering at once; the other serves
`TriggerService.TriggerFlow` by calling that StartInstance, as the API does. Both run on uvloop like the services,
without interceptors, database or Redis.
Driven by the same load process at the same concurrency as TriggerFlow, it says how many calls a second the
process layout itself allows on this machine: what no work inside the services can raise TriggerFlow above.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import uvloop
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import trigger_pb2

from tests.support.eventually import eventually_sync
from tests.support.processes import free_port


async def _start_instance(request: engine_pb2.StartInstanceRequest, context: Any) -> engine_pb2.StartInstanceResponse:
    return engine_pb2.StartInstanceResponse(instance_id=str(uuid.uuid4()))


def _trigger_flow(engine: engine_pb2_grpc.EngineServiceAsyncStub) -> Any:
    async def trigger_flow(request: trigger_pb2.TriggerFlowRequest, context: Any) -> trigger_pb2.TriggerFlowResponse:
        started = await engine.StartInstance(
            engine_pb2.StartInstanceRequest(
                tenant_id=str(uuid.uuid4()), flow_id=request.flow_id, participant_id=request.participant_id
            ),
            timeout=60,
        )
        return trigger_pb2.TriggerFlowResponse(instance_id=started.instance_id)

    return trigger_flow


def _handler(service: str, method: str, behaviour: Any, request_type: Any, response_type: Any) -> Any:
    return grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
        },
    )


async def _serve(role: str, port: int, engine_port: int) -> None:
    server = grpc.aio.server()
    if role == "engine":
        handler = _handler(
            "kalcifer.engine.v1.EngineService",
            "StartInstance",
            _start_instance,
            engine_pb2.StartInstanceRequest,
            engine_pb2.StartInstanceResponse,
        )
    else:
        engine: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(
            grpc.aio.insecure_channel(f"127.0.0.1:{engine_port}")
        )
        handler = _handler(
            "kalcifer.v1.TriggerService",
            "TriggerFlow",
            _trigger_flow(engine),
            trigger_pb2.TriggerFlowRequest,
            trigger_pb2.TriggerFlowResponse,
        )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"grpc_floor process exited with {process.returncode}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    eventually_sync(listening, until=bool, within=60, interval=0.05, what=f"port {port} listening")


@contextlib.contextmanager
def two_hops() -> Iterator[str]:
    """Both relay processes running; the address of the API-like one."""
    engine_port, api_port = free_port(), free_port()
    command = [sys.executable, "-c", "from bench.public_api.grpc_floor import main; main()"]
    processes = [subprocess.Popen([*command, "engine", str(engine_port)])]
    try:
        _wait_listening(engine_port, processes[0])
        processes.append(subprocess.Popen([*command, "api", str(api_port), str(engine_port)]))
        _wait_listening(api_port, processes[1])
        yield f"127.0.0.1:{api_port}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def main() -> None:
    """Serve one side: `engine PORT` or `api PORT ENGINE_PORT` (the process `two_hops` starts)."""
    role, port = sys.argv[1], int(sys.argv[2])
    uvloop.run(_serve(role, port, int(sys.argv[3]) if len(sys.argv) > 3 else 0))
