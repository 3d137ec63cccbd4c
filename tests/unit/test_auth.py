"""Parsing the authorization metadata and caching key lookups."""

from __future__ import annotations

import uuid

import pytest
from kalcifer_common import errors
from kalcifer_common.rpc.auth import ApiKeyCache, ApiKeyIdentity, bearer_token, hash_api_key


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("  Bearer   abc  ", "abc")],
)
def test_bearer_scheme_is_case_insensitive(header: str, token: str) -> None:
    assert bearer_token([("authorization", header)]) == token


@pytest.mark.parametrize("header", ["", "abc", "Basic abc", "Bearer", "Bearer a b", "Token abc"])
def test_malformed_authorization_is_unauthenticated(header: str) -> None:
    with pytest.raises(errors.Unauthenticated):
        bearer_token([("authorization", header)])


def test_missing_or_repeated_authorization_is_unauthenticated() -> None:
    with pytest.raises(errors.Unauthenticated, match="missing"):
        bearer_token([("x-other", "1")])
    with pytest.raises(errors.Unauthenticated, match="more than one"):
        bearer_token([("authorization", "Bearer a"), ("authorization", "Bearer b")])


def test_key_hash_is_lowercase_sha256_hex() -> None:
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_cache_asks_again_after_its_ttl() -> None:
    identity = ApiKeyIdentity(tenant_id=uuid.uuid4(), api_key_id=uuid.uuid4())
    answers: list[ApiKeyIdentity | None] = [identity, None]
    calls: list[str] = []

    async def lookup(key_hash: str) -> ApiKeyIdentity | None:
        calls.append(key_hash)
        return answers[len(calls) - 1]

    cache = ApiKeyCache(lookup, ttl_seconds=0.0)
    assert await cache.resolve("h") == identity
    assert await cache.resolve("h") is None  # revoked in between: a zero TTL sees it at once
    assert calls == ["h", "h"]

    cached = ApiKeyCache(lookup, ttl_seconds=60.0)
    calls.clear()
    answers[:] = [identity]
    assert await cached.resolve("k") == identity
    assert await cached.resolve("k") == identity
    assert calls == ["k"]


async def test_cache_is_bounded() -> None:
    async def lookup(key_hash: str) -> ApiKeyIdentity | None:
        return None

    cache = ApiKeyCache(lookup, ttl_seconds=60.0, max_entries=3)
    for i in range(10):
        await cache.resolve(str(i))
    assert len(cache._entries) == 3
