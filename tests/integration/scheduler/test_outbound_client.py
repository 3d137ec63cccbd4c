"""`OutboundClient` and `CallMaker.call` against a real local endpoint: the request as sent, the answer as capped,
the retries as counted (SPEC 6.10)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from kalcifer_common.outbound import CallSpec
from kalcifer_common.outbound_policy import OutboundError, OutboundPolicy
from kalcifer_scheduler.outbound.calls import CallMaker
from kalcifer_scheduler.outbound.client import OutboundClient
from kalcifer_scheduler.stats import SchedulerStats

from tests.support.endpoint import Endpoint, Reply, running_endpoint

CAP = 4096


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    with running_endpoint() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    made = OutboundClient(OutboundPolicy.parse("127.0.0.1"), max_response_bytes=CAP)
    yield made
    await made.aclose()


def _maker(client: OutboundClient) -> CallMaker:
    """A CallMaker for `call` alone (claims and resumes are not used by it)."""
    return CallMaker(
        claims=cast(Any, None),
        client=client,
        sender=cast(Any, None),
        stats=SchedulerStats(),
        concurrency=1,
        max_attempts=3,
        backoff_seconds=0.05,
    )


async def test_the_request_keeps_its_host_header_and_body(client: OutboundClient, endpoint: Endpoint) -> None:
    endpoint.script(default=Reply(201, {"id": 7}))
    response = await client.request(
        "PATCH", endpoint.url("/things/1"), headers={"X-A": "b"}, content=b'{"a":1}', timeout_seconds=5
    )
    assert (response.status, response.body) == (201, b'{"id":7}')
    [seen] = endpoint.requests_to("/things/1")
    assert (seen.method, seen.headers["host"], seen.headers["x-a"], seen.body) == (
        "PATCH",
        f"127.0.0.1:{endpoint.port}",
        "b",
        b'{"a":1}',
    )


async def test_an_answer_over_the_cap_is_refused(client: OutboundClient, endpoint: Endpoint) -> None:
    endpoint.script(default=Reply(200, "x" * (CAP * 2)))
    with pytest.raises(OutboundError, match=f"larger than {CAP} bytes") as refused:
        await client.request("GET", endpoint.url("/big"), headers={}, content=None, timeout_seconds=5)
    assert not refused.value.retryable


async def test_a_redirect_is_an_answer_not_followed(client: OutboundClient, endpoint: Endpoint) -> None:
    endpoint.script(default=Reply(302))
    response = await client.request("GET", endpoint.url("/moved"), headers={}, content=None, timeout_seconds=5)
    assert response.status == 302
    assert len(endpoint.requests_to("/moved")) == 1


async def test_an_endpoint_that_hangs_times_out_at_the_deadline(client: OutboundClient, endpoint: Endpoint) -> None:
    endpoint.script(Reply(hang=True))
    with pytest.raises(OutboundError, match=r"no answer from 127\.0\.0\.1") as timed_out:
        await client.request("GET", endpoint.url("/hang"), headers={}, content=None, timeout_seconds=0.5)
    assert timed_out.value.retryable
    endpoint.release()


@pytest.mark.parametrize("scheme_url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost"])
async def test_only_http_urls_are_called(client: OutboundClient, scheme_url: str) -> None:
    with pytest.raises(OutboundError) as refused:
        await client.request("GET", scheme_url, headers={}, content=None, timeout_seconds=1)
    assert not refused.value.retryable


async def test_a_call_retries_non_2xx_answers_then_fails_saying_why(client: OutboundClient, endpoint: Endpoint) -> None:
    endpoint.script(default=Reply(503))
    answer = await _maker(client).call(CallSpec(endpoint.url("/down"), "POST", {}, {"a": 1}, 5), idempotency_key="k1")
    assert (answer.ok, answer.status, answer.attempts, answer.error) == (False, 503, 3, "answered HTTP 503")
    keys = {request.headers["idempotency-key"] for request in endpoint.requests_to("/down")}
    assert keys == {"k1"}


async def test_a_refused_address_is_told_and_retried_like_a_closed_port(client: OutboundClient) -> None:
    refused = await _maker(client).call(CallSpec("http://127.0.0.3:9/x", "GET", {}, None, 5), idempotency_key="k2")
    closed = await _maker(client).call(CallSpec("http://127.0.0.1:9/x", "GET", {}, None, 5), idempotency_key="k3")
    assert (refused.ok, refused.attempts, refused.error) == (False, 3, "no answer from 127.0.0.3")
    assert (closed.ok, closed.attempts, closed.error) == (False, 3, "no answer from 127.0.0.1")


async def test_a_node_type_call_over_plain_http_is_refused_unless_allowlisted(client: OutboundClient) -> None:
    spec = CallSpec("http://hooks.example.com/x", "POST", {}, {}, 5, https_only=True)
    answer = await _maker(client).call(spec, idempotency_key="k4")
    assert (answer.ok, answer.attempts, answer.error) == (False, 1, "hooks.example.com must be called over https://")
