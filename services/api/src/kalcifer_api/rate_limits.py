"""Per-tenant rate limits on the public API (SPEC 10): one token bucket per tenant, shared by every API replica.

The bucket lives in Redis and is taken from by one Lua script per call (atomic, on Redis's own clock, so replicas
agree): `RATE_LIMIT_PER_SECOND` tokens a second, up to `RATE_LIMIT_BURST`. A call that finds the bucket empty is
answered `RESOURCE_EXHAUSTED` with reason `RATE_LIMITED` and a `RetryInfo` saying when a token will be there;
it is refused from its metadata, before its body is decoded or the database is asked anything, so a flood costs
its tenant's budget and little else.

A tenant that keeps calling while refused (refused again within a second: it ignores `RetryInfo`) has its refused
calls held until their retry time (their bodies unread), one per token, then tried once more: at most `max_held`
of its calls at once per replica, and at most `max_held_total` of all tenants' (half of MAX_CONCURRENT_RPCS, so
holds never take the room other tenants' calls need); beyond those, refused at once. A client that
waits as told never meets the hold; a flood that does not runs at the pace it is told and costs timers, not the
CPU that other tenants' calls need. A flood with more calls in flight than can be held is answered at once, at
about half a millisecond of API CPU a call: past that, it is a denial of service for the edge in front of the API
(connection limits), not a rate to limit.

Where the limit is high, a replica takes its tokens a few at a time (`lease_size`: a tenth of the burst or of what
the rate refills in `LEASE_SECONDS`, at most `MAX_LEASE`; one at a time at the defaults) and spends them on its next
calls of that tenant: a round trip to Redis per call costs the API about a fifth of its CPU per call. A token a
replica took and did not spend within `LEASE_SECONDS` is dropped, never spent later, so no tenant is ever let
through more than its bucket gives.

Redis may forget or go away at any time: a forgotten bucket starts full again, and while Redis cannot be reached
each replica limits with a bucket of its own in memory (the same rate), so the limit degrades to per replica and
never to none. Tenants are limited independently: one tenant's empty bucket never delays another's calls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import redis.asyncio as aioredis
from kalcifer_common import errors
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.auth import Principal
from redis.exceptions import RedisError

_log = get_logger(__name__)

RATE_LIMITED = "RATE_LIMITED"
# A tenant refused again within this long of its last refusal is calling on through its refusals.
_PERSISTENT_SECONDS = 1.0

# KEYS[1] the tenant's bucket; ARGV rate (tokens/s), burst, tokens wanted. Returns {n, 0} when n >= 1 tokens were
# taken (at most those wanted, at most those there), else {0, ms to wait}. Effects replication (replicate_commands)
# lets a script that read TIME write, on Redis before 7 too.
_TAKE = """
pcall(redis.replicate_commands)
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local taken, wait = 0, 0
if tokens >= 1 then
  taken = math.min(wanted, math.floor(tokens))
  tokens = tokens - taken
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {taken, wait}
"""


# How long tokens taken ahead stay spendable, and how many are taken at most at once (see the module docstring).
LEASE_SECONDS = 0.1
MAX_LEASE = 50


def lease_size(per_second: float, burst: int) -> int:
    """Tokens a replica takes from Redis at once: a tenth of the burst or of `LEASE_SECONDS` of the rate, 1 to
    `MAX_LEASE`."""
    return max(1, min(MAX_LEASE, int(min(burst, per_second * LEASE_SECONDS) / 10)))


@dataclass
class _LocalBucket:
    tokens: float
    at: float


class TenantRateLimiter:
    """Admits or refuses one call of a tenant; `admit` is the hook `AuthInterceptor` calls after authentication."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        per_second: float,
        burst: int,
        key_prefix: str,
        max_held: int = 0,
        max_held_total: int = 0,
        max_local: int = 10_000,
    ) -> None:
        self._redis = redis
        self._rate = per_second
        self._burst = burst
        self._prefix = key_prefix
        self._script = redis.register_script(_TAKE)
        self._lease = lease_size(per_second, burst)
        # Per tenant: tokens taken from Redis and not spent yet, and until when they may be spent.
        self._leased: OrderedDict[uuid.UUID, tuple[int, float]] = OrderedDict()
        self._local: OrderedDict[uuid.UUID, _LocalBucket] = OrderedDict()
        self._max_local = max_local
        self._degraded_since = 0.0
        # Tenants Redis found empty, until their next token: refused here without asking Redis again, so a flood
        # costs a dictionary lookup per call, not a round trip.
        self._empty_until: OrderedDict[uuid.UUID, float] = OrderedDict()
        self._max_held = max_held
        # Held calls of all tenants together: they count toward MAX_CONCURRENT_RPCS, and must never fill it.
        self._max_held_total = max_held_total
        self._held_total = 0
        # Per tenant: calls held now, and when the last of them is released.
        self._held: dict[uuid.UUID, tuple[int, float]] = {}
        self._refused_at: OrderedDict[uuid.UUID, float] = OrderedDict()
        # Tenants refused lately whose one call asking Redis is in flight: their other calls wait for its answer.
        self._asking: dict[uuid.UUID, asyncio.Future[None]] = {}

    async def admit(self, principal: Principal) -> errors.KalciferError | None:
        """None to let the call through; the `RATE_LIMITED` error to answer it with otherwise."""
        if principal.tenant_id is None:
            return None
        tenant_id = principal.tenant_id
        wait_ms = await self._take(tenant_id)
        if wait_ms <= 0:
            return None
        if (
            self._refused_again(tenant_id)
            and self._held.get(tenant_id, (0, 0.0))[0] < self._max_held
            and self._held_total < self._max_held_total
        ):
            await self._hold(tenant_id, wait_ms / 1000)
            wait_ms = await self._take(tenant_id)
            if wait_ms <= 0:
                return None
        seconds = max(wait_ms, 1.0) / 1000  # never "retry in 0s": the token is at least a moment away
        return errors.ResourceExhausted(
            RATE_LIMITED,
            f"this tenant's rate limit ({self._rate:g} calls/s, bursts of {self._burst}) is spent; "
            f"retry in {seconds:.3g}s",
            retry_after_seconds=seconds,
        )

    async def _hold(self, tenant_id: uuid.UUID, seconds: float) -> None:
        """Hold one call of the tenant: the held calls go one per token (1/rate apart, from when the next token
        comes), so they take the tokens in turn instead of all waking for the first one."""
        now = time.monotonic()
        held, release_at = self._held.get(tenant_id, (0, 0.0))
        # A hair past the token's moment: asyncio may wake a timer up to its clock resolution early.
        release_at = max(now + seconds + 0.002, release_at + 1 / self._rate)
        self._held[tenant_id] = (held + 1, release_at)
        self._held_total += 1
        try:
            await asyncio.sleep(release_at - now)
        finally:
            self._held_total -= 1
            held, last = self._held[tenant_id]
            if held > 1:
                self._held[tenant_id] = (held - 1, last)
            else:
                del self._held[tenant_id]

    def _refused_again(self, tenant_id: uuid.UUID) -> bool:
        """Note a refusal of the tenant; whether it was refused within the last `_PERSISTENT_SECONDS` too."""
        now = time.monotonic()
        last = self._refused_at.pop(tenant_id, None)
        self._refused_at[tenant_id] = now
        while len(self._refused_at) > self._max_local:
            self._refused_at.popitem(last=False)
        return last is not None and now - last < _PERSISTENT_SECONDS

    async def _take(self, tenant_id: uuid.UUID) -> float:
        if self._spend_leased(tenant_id):
            return 0.0
        while True:
            now = time.monotonic()
            empty_until = self._empty_until.get(tenant_id)
            if empty_until is not None:
                if now < empty_until:
                    return (empty_until - now) * 1000
                del self._empty_until[tenant_id]
            asking = self._asking.get(tenant_id)
            if asking is None:
                break
            # A tenant refused lately asks Redis one call at a time: when its empty window ends, the calls that
            # piled up behind it learn the next answer from the first one instead of all asking at once.
            await asyncio.shield(asking)
        refused_at = self._refused_at.get(tenant_id)
        if refused_at is None or now - refused_at >= _PERSISTENT_SECONDS:
            return await self._take_and_remember(tenant_id, now)
        self._asking[tenant_id] = asking = asyncio.get_running_loop().create_future()
        try:
            return await self._take_and_remember(tenant_id, now)
        finally:
            del self._asking[tenant_id]
            asking.set_result(None)

    async def _take_and_remember(self, tenant_id: uuid.UUID, now: float) -> float:
        wait_ms = await self._take_shared(tenant_id)
        if wait_ms > 0:
            self._empty_until[tenant_id] = now + wait_ms / 1000
            while len(self._empty_until) > self._max_local:
                self._empty_until.popitem(last=False)
        return wait_ms

    def _spend_leased(self, tenant_id: uuid.UUID) -> bool:
        """Spend a token this replica took ahead for the tenant, if one is left and still spendable."""
        lease = self._leased.get(tenant_id)
        if lease is None:
            return False
        left, until = lease
        if time.monotonic() >= until:
            del self._leased[tenant_id]
            return False
        if left > 1:
            self._leased[tenant_id] = (left - 1, until)
        else:
            del self._leased[tenant_id]
        return True

    def _keep_leased(self, tenant_id: uuid.UUID, extra: int) -> None:
        """Keep `extra` tokens taken beyond this call's for the tenant's next calls (added to those still left)."""
        now = time.monotonic()
        left, until = self._leased.pop(tenant_id, (0, 0.0))
        self._leased[tenant_id] = ((left if now < until else 0) + extra, now + LEASE_SECONDS)
        while len(self._leased) > self._max_local:
            self._leased.popitem(last=False)

    async def _take_shared(self, tenant_id: uuid.UUID) -> float:
        try:
            taken, wait_ms = await self._script(
                keys=[f"{self._prefix}:rate:{tenant_id}"], args=[self._rate, self._burst, self._lease]
            )
        except (RedisError, OSError) as error:
            now = time.monotonic()
            if now - self._degraded_since > 10:
                _log.warning("rate limits per replica: Redis unreachable", error=repr(error))
                self._degraded_since = now
            return self._take_locally(tenant_id, now)
        if int(taken) > 1:
            self._keep_leased(tenant_id, int(taken) - 1)
        return 0.0 if int(taken) >= 1 else float(wait_ms)

    def _take_locally(self, tenant_id: uuid.UUID, now: float) -> float:
        bucket = self._local.get(tenant_id)
        if bucket is None:
            bucket = self._local[tenant_id] = _LocalBucket(float(self._burst), now)
            while len(self._local) > self._max_local:
                self._local.popitem(last=False)
        self._local.move_to_end(tenant_id)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) * 1000 / self._rate
