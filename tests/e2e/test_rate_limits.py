"""Per-tenant rate limits (SPEC 10): a tenant over its budget gets RESOURCE_EXHAUSTED `RATE_LIMITED` with a
`RetryInfo`, before its request is read, while another tenant's calls all go through. (Latency under a flood is
measured by `bench/rate_limit_fairness.py`, not asserted here.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from kalcifer.v1 import flow_pb2, flow_pb2_grpc

from tests.support.processes import Suite, scratch_suite
from tests.support.rpc import detail_of, reason_of
from tests.support.tenants import new_tenant

RATE, BURST = 20, 20


@pytest.fixture(scope="module")
def limited_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The services with a small budget per tenant: 20 calls a second, bursts of 20."""
    settings = {"RATE_LIMIT_PER_SECOND": str(RATE), "RATE_LIMIT_BURST": str(BURST)}
    with scratch_suite(servers, tmp_path_factory.mktemp("limited-logs"), settings) as suite:
        yield suite


def _calls(channel: grpc.Channel, auth: tuple[tuple[str, str]], count: int) -> list[grpc.RpcError | None]:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    outcomes: list[grpc.RpcError | None] = []
    for _ in range(count):
        try:
            flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=auth)
            outcomes.append(None)
        except grpc.RpcError as error:
            outcomes.append(error)
    return outcomes


def test_a_tenant_over_its_budget_is_told_when_to_retry_and_another_is_not_touched(limited_suite: Suite) -> None:
    flooder = new_tenant(limited_suite, f"flooder-{uuid.uuid4().hex[:6]}")
    neighbour = new_tenant(limited_suite, f"neighbour-{uuid.uuid4().hex[:6]}")
    with grpc.insecure_channel(limited_suite.address("api")) as channel, ThreadPoolExecutor(4) as pool:
        began = time.monotonic()
        floods = [pool.submit(_calls, channel, flooder.auth, 60) for _ in range(3)]
        calm: list[grpc.RpcError | None] = []
        for _ in range(10):  # 10 calls a second for a second: well inside the neighbour's own budget
            calm += _calls(channel, neighbour.auth, 1)
            time.sleep(0.1)
        flooded = [outcome for flood in floods for outcome in flood.result()]
        elapsed = time.monotonic() - began

    refused = [error for error in flooded if error is not None]
    assert calm == [None] * 10
    # What the bucket can give in that time, and not one call more.
    assert len(flooded) - len(refused) <= BURST + elapsed * RATE + 1
    assert refused
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(error) == "RATE_LIMITED"
        delay = detail_of(error, error_details_pb2.RetryInfo).retry_delay
        assert 0 < delay.ToTimedelta().total_seconds() <= 1 / RATE + 0.01


def test_the_budget_refills_at_its_rate(limited_suite: Suite) -> None:
    tenant = new_tenant(limited_suite, f"refill-{uuid.uuid4().hex[:6]}")
    with grpc.insecure_channel(limited_suite.address("api")) as channel:
        began = time.monotonic()
        first = _calls(channel, tenant.auth, BURST * 2)
        elapsed = time.monotonic() - began
        time.sleep(0.5)  # the time under test: 10 tokens come back at 20/s
        again = _calls(channel, tenant.auth, 5)
    assert first[:BURST] == [None] * BURST  # the burst
    assert sum(error is None for error in first) <= BURST + elapsed * RATE + 1  # then only what refills
    assert again == [None] * 5


def test_a_tenant_calling_on_while_refused_is_answered_at_its_retry_time(limited_suite: Suite) -> None:
    tenant = new_tenant(limited_suite, f"pushy-{uuid.uuid4().hex[:6]}")
    with grpc.insecure_channel(limited_suite.address("api")) as channel:
        spent = _calls(channel, tenant.auth, BURST + 1)  # the burst, and a first refusal
        began = time.monotonic()
        pushed = _calls(channel, tenant.auth, 20)  # one after another, ignoring RetryInfo
        elapsed = time.monotonic() - began
    assert spent[:BURST] == [None] * BURST
    # Each call made inside a refused window was held until a token came (1/RATE apart), then taken: the flood went
    # at the budget's pace (refused at once, 20 calls would take milliseconds) and lost little to refusals.
    assert elapsed >= 20 / RATE * 0.75, elapsed
    assert sum(outcome is None for outcome in pushed) >= 10
