"""`python -m kalcifer_common.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC health status is SERVING.

Used by container health checks, so it depends on nothing but grpcio; over TLS (and mTLS) when TLS_CERT_FILE,
TLS_KEY_FILE (and TLS_CA_FILE) are set, like the services it checks.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kalcifer_common.rpc.tls import TlsFiles, secure_or_insecure_channel


def check(address: str, service: str = "", timeout_seconds: float = 3.0, tls: TlsFiles | None = None) -> bool:
    """Whether `service` at `address` answers SERVING within the timeout."""
    with secure_or_insecure_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    """Console entry point."""
    if len(sys.argv) not in (2, 3):
        print("usage: python -m kalcifer_common.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        raise SystemExit(2)
    service = sys.argv[2] if len(sys.argv) == 3 else ""
    raise SystemExit(0 if check(sys.argv[1], service, tls=TlsFiles.from_environment()) else 1)


if __name__ == "__main__":
    main()
