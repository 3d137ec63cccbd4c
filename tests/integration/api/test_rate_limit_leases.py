"""Tokens taken ahead (`kalcifer_api.rate_limits`): where a tenant's limit is high, a replica takes a few tokens
per round trip to Redis and spends them on the tenant's next calls, within LEASE_SECONDS; it never lets through
more than the bucket gives."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import cast

import pytest
import redis.asyncio as aioredis
from kalcifer_api.rate_limits import LEASE_SECONDS, MAX_LEASE, TenantRateLimiter, lease_size
from kalcifer_common.rpc.auth import AuthPolicy, Principal


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _limiter(redis: aioredis.Redis, per_second: float, burst: int, prefix: str) -> TenantRateLimiter:
    return TenantRateLimiter(redis, per_second=per_second, burst=burst, key_prefix=prefix)


async def _bucket(redis: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    """The tenant's bucket as Redis holds it (tokens, and when the script last ran)."""
    return await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(key))


def test_the_lease_is_one_token_unless_the_limit_is_high() -> None:
    assert lease_size(20, 20) == 1  # the e2e rate-limit tests' tenant: exact, one token per call
    assert lease_size(200, 400) == 2  # the defaults
    assert lease_size(1_000_000, 1_000_000) == MAX_LEASE
    assert lease_size(1_000_000, 30) == 3  # a small burst bounds it too


async def test_a_leased_token_is_spent_without_asking_redis_and_only_within_its_time(redis: aioredis.Redis) -> None:
    prefix = f"lease-test-{uuid.uuid4()}"
    limiter = _limiter(redis, 200, 400, prefix)  # lease 2
    tenant = Principal(AuthPolicy.API_KEY, tenant_id=uuid.uuid4())
    key = f"{prefix}:rate:{tenant.tenant_id}"

    assert await limiter.admit(tenant) is None
    after_first = await _bucket(redis, key)
    assert await limiter.admit(tenant) is None  # the second token of the first round trip
    assert await _bucket(redis, key) == after_first, "the second call did not ask Redis"
    assert await limiter.admit(tenant) is None
    after_third = await _bucket(redis, key)
    assert after_third != after_first, "the third asked Redis again"

    # A token left over is not spent after LEASE_SECONDS: the next call asks Redis.
    assert await limiter.admit(tenant) is None  # takes 2 again: 1 left
    after_fourth = await _bucket(redis, key)
    await asyncio.sleep(LEASE_SECONDS * 1.5)
    assert await limiter.admit(tenant) is None
    assert await _bucket(redis, key) != after_fourth


async def test_leases_never_let_a_tenant_through_more_than_its_bucket_gives(redis: aioredis.Redis) -> None:
    per_second, burst = 300.0, 60  # lease 3
    prefix = f"lease-test-{uuid.uuid4()}"
    limiters = [_limiter(redis, per_second, burst, prefix) for _ in range(3)]  # three replicas, one bucket
    tenant = Principal(AuthPolicy.API_KEY, tenant_id=uuid.uuid4())
    began = time.monotonic()
    answers = await asyncio.gather(*(limiters[n % 3].admit(tenant) for n in range(600)))
    elapsed = time.monotonic() - began

    admitted = sum(1 for answer in answers if answer is None)
    assert admitted <= burst + per_second * elapsed + 1, (admitted, elapsed)
    assert admitted < len(answers), "the bucket ran out"
