"""The SDK's retries against real refusals: RATE_LIMITED waits out the server's RetryInfo, UNAVAILABLE is retried
until the API is back, and the call's deadline bounds it all."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from kalcifer.v1 import flow_pb2, flow_pb2_grpc
from kalcifer_client import (
    NO_RETRIES,
    DeadlineExceeded,
    KalciferClient,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unavailable,
)

from tests.support.processes import Suite, scratch_suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

RATE, BURST = 5, 5


@pytest.fixture(scope="module")
def limited_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The services with a small budget per tenant (5 calls a second, bursts of 5), the API stoppable."""
    settings = {"RATE_LIMIT_PER_SECOND": str(RATE), "RATE_LIMIT_BURST": str(BURST)}
    with scratch_suite(servers, tmp_path_factory.mktemp("sdk-retry-logs"), settings) as suite:
        yield suite


async def test_rate_limited_calls_wait_for_the_retry_info_and_succeed(limited_suite: Suite) -> None:
    # A tenant's first refusal is answered at once (the API holds only the calls of a tenant refused again), so
    # without retries it reaches the caller, and with them the same call goes through after the RetryInfo delay.
    hasty = new_tenant(limited_suite, f"sdk-hasty-{uuid.uuid4().hex[:6]}")
    async with KalciferClient(limited_suite.address("api"), hasty.key, timeout=60) as client:
        list_flows = flow_pb2_grpc.FlowServiceStub(client.channel).ListFlows

        async def flood() -> None:
            for _ in range(BURST + 1):
                await client.call(list_flows, flow_pb2.ListFlowsRequest(), retry=NO_RETRIES)

        with pytest.raises(RateLimited) as raised:
            await flood()
    assert raised.value.retryable
    assert raised.value.retry_after is not None
    assert 0 < raised.value.retry_after <= 1 / RATE + 0.01

    patient = new_tenant(limited_suite, f"sdk-patient-{uuid.uuid4().hex[:6]}")
    calls = BURST + 2 * RATE  # the burst, then two seconds' worth of tokens
    async with KalciferClient(limited_suite.address("api"), patient.key, timeout=60) as client:
        began = time.monotonic()
        for _ in range(calls):
            assert [flow async for flow in client.flows.list()] == []
        elapsed = time.monotonic() - began
    # Every call went through, and only as fast as the bucket refills.
    assert elapsed >= (calls - BURST) / RATE - 0.5


async def test_unavailable_is_retried_until_the_api_is_back(limited_suite: Suite) -> None:
    tenant = new_tenant(limited_suite, f"sdk-unavailable-{uuid.uuid4().hex[:6]}")
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.2, max_backoff=1.0)
    limited_suite.stop("api")
    try:
        async with KalciferClient(limited_suite.address("api"), tenant.key, timeout=1.5) as client:
            began = time.monotonic()
            with pytest.raises((Unavailable, DeadlineExceeded)):
                [flow async for flow in client.flows.list()]
            assert time.monotonic() - began < 10  # the deadline bounded the retries

        async with KalciferClient(limited_suite.address("api"), tenant.key, timeout=90, retry=patient) as client:
            waiting = asyncio.create_task(client.flows.get(str(uuid.uuid4())))
            await asyncio.sleep(1)  # the time under test: the call is retrying while the API is down
            assert not waiting.done()
            await asyncio.to_thread(limited_suite.start, "api")
            # The API answered at last: NOT_FOUND for the made-up id, not a transport error.
            with pytest.raises(NotFound):
                await waiting
    finally:
        if "api" not in limited_suite.processes:
            limited_suite.start("api")
