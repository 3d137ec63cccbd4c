"""IngestEvent stores a single event on the driver, outside SQLAlchemy's statement machinery (repo/events.py). A
connection the server cut must then still leave the pool: the call that meets it answers UNAVAILABLE, and the next
one gets a new connection. (Without pre-ping, a dead connection put back in the pool would fail every call after.)

One connection per pool, so the API's single event-store connection is the one cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kalcifer.v1 import event_pb2, event_pb2_grpc

from tests.support.databases import cut_every_connection
from tests.support.processes import Suite, scratch_suite
from tests.support.tenants import Tenant, new_tenant


@pytest.fixture(scope="module")
def one_connection_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    log_dir = Path(tmp_path_factory.mktemp("cut-connection-logs"))
    with scratch_suite(servers, log_dir, {"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0"}) as suite:
        yield suite


def _ingest(suite: Suite, tenant: Tenant, participant: str) -> grpc.StatusCode:
    with grpc.insecure_channel(suite.address("api")) as channel:
        try:
            event_pb2_grpc.EventServiceStub(channel).IngestEvent(
                event_pb2.IngestEventRequest(participant_id=participant, event_type="visited"),
                metadata=tenant.auth,
                timeout=30,
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_cut_connection_fails_one_ingest_at_most_and_never_stays_in_the_pool(
    one_connection_suite: Suite,
) -> None:
    suite = one_connection_suite
    tenant = new_tenant(suite, "cut")
    assert _ingest(suite, tenant, "before") == grpc.StatusCode.OK
    assert await cut_every_connection(suite.database_url) > 0

    codes = [_ingest(suite, tenant, f"after-{n}") for n in range(4)]

    # The first call may meet the cut connection (UNAVAILABLE, retryable); every call after it is served.
    assert codes[0] in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), codes
    assert codes[1:] == [grpc.StatusCode.OK] * 3, codes
