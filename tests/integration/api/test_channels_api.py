"""ChannelService on the real API process: provider settings validated field by field; secrets write-only (never
answered, never logged, never remembered by an idempotency record), sealed at rest with KALCIFER_SECRET_KEY and
refused outright when the API has no key; kept, removed or dropped as documented; tenants isolated."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from kalcifer.v1 import channel_pb2, channel_pb2_grpc
from kalcifer_common.channels import secret_context
from kalcifer_common.db.models import IdempotencyRecord, ProviderConfig
from kalcifer_common.secrets import SecretBox
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.processes import BIN, Suite, free_port, wait_serving
from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

C = channel_pb2
SECRET = "hook-secret-0123456789"
PASSWORD = "smtp-password-9876543210"
HOOK = {"url": "https://hooks.example.com/kalcifer"}
SMTP = {"host": "smtp.example.com", "port": 587, "from": "news@example.com", "username": "news"}


@pytest.fixture(scope="module")
def channels(channel: grpc.Channel) -> channel_pb2_grpc.ChannelServiceStub:
    return channel_pb2_grpc.ChannelServiceStub(channel)


@pytest.fixture
def tenant(suite: Suite) -> Tenant:
    """A tenant of each test's own."""
    return new_tenant(suite, "channels")


def _set(
    channels: channel_pb2_grpc.ChannelServiceStub,
    tenant: Tenant,
    channel: str,
    provider: str,
    settings: dict[str, Any],
    request_id: str = "",
) -> C.ChannelProvider:
    answer: C.ChannelProvider = channels.SetChannelProvider(
        C.SetChannelProviderRequest(
            channel=channel, provider=provider, settings=dict_to_struct(settings), request_id=request_id
        ),
        metadata=tenant.auth,
    )
    return answer


async def _stored(sessions: async_sessionmaker[AsyncSession], tenant: Tenant, channel: str) -> ProviderConfig:
    async with sessions() as session:
        row = await session.scalar(
            select(ProviderConfig).where(ProviderConfig.tenant_id == tenant.id, ProviderConfig.channel == channel)
        )
    assert row is not None
    return row


async def test_a_secret_is_sealed_at_rest_and_never_answered_or_logged(
    suite: Suite,
    channels: channel_pb2_grpc.ChannelServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    answer = _set(channels, tenant, "sms", "webhook", HOOK | {"secret": SECRET})
    assert (answer.channel, answer.provider, list(answer.secret_settings)) == ("sms", "webhook", ["secret"])
    assert struct_to_dict(answer.settings) == HOOK
    got = channels.GetChannelProvider(C.GetChannelProviderRequest(channel="sms"), metadata=tenant.auth)
    listed = channels.ListChannelProviders(C.ListChannelProvidersRequest(), metadata=tenant.auth)
    assert got == answer
    assert list(listed.channel_providers) == [answer]
    for message in (answer, got, listed):
        assert SECRET.encode() not in message.SerializeToString()

    row = await _stored(sessions, tenant, "sms")
    assert row.settings == HOOK
    assert SECRET not in str(row.secrets)
    opened = SecretBox([suite.secret_key]).open(
        row.secrets["secret"], context=secret_context(str(tenant.id), "sms", "secret")
    )
    assert opened == SECRET
    assert SECRET not in suite.log_of("api")


async def test_an_idempotency_record_remembers_no_secret_yet_tells_two_secrets_apart(
    channels: channel_pb2_grpc.ChannelServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    request_id = str(uuid.uuid4())
    first = _set(channels, tenant, "email", "smtp", SMTP | {"password": PASSWORD}, request_id=request_id)
    assert _set(channels, tenant, "email", "smtp", SMTP | {"password": PASSWORD}, request_id=request_id) == first
    other_secret = rpc_error(
        lambda: _set(channels, tenant, "email", "smtp", SMTP | {"password": "another-password"}, request_id=request_id)
    )
    assert set(field_violations(other_secret)) == {"request_id"}
    async with sessions() as session:
        records = (
            await session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.scope == str(tenant.id)))
        ).all()
    assert records
    for record in records:
        assert PASSWORD.encode() not in record.response
        assert PASSWORD not in record.request_hash


async def test_a_secret_left_out_is_kept_null_removes_it_and_a_new_provider_starts_without(
    channels: channel_pb2_grpc.ChannelServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _set(channels, tenant, "email", "smtp", SMTP | {"password": PASSWORD})
    sealed = (await _stored(sessions, tenant, "email")).secrets["password"]
    kept = _set(channels, tenant, "email", "smtp", SMTP | {"port": 2525})
    assert list(kept.secret_settings) == ["password"]
    assert (await _stored(sessions, tenant, "email")).secrets == {"password": sealed}

    removed = _set(channels, tenant, "email", "smtp", SMTP | {"password": None})
    assert list(removed.secret_settings) == []
    assert (await _stored(sessions, tenant, "email")).secrets == {}

    _set(channels, tenant, "push", "webhook", HOOK | {"secret": SECRET})
    # Switching provider keeps no secret of the old one: the webhook's `secret` is required again.
    switched = rpc_error(lambda: _set(channels, tenant, "push", "log", {"secret": SECRET}))
    assert set(field_violations(switched)) == {"settings.secret"}
    assert list(_set(channels, tenant, "push", "log", {}).secret_settings) == []
    assert list(_set(channels, tenant, "push", "webhook", HOOK | {"secret": SECRET}).secret_settings) == ["secret"]
    needs_secret = rpc_error(lambda: _set(channels, tenant, "in_app", "webhook", HOOK))
    assert "is required by webhook" in field_violations(needs_secret)["settings.secret"]


@pytest.mark.parametrize(
    ("channel_name", "provider", "settings", "expected"),
    [
        ("fax", "log", {}, {"channel"}),
        ("email", "pigeon", {}, {"provider"}),
        ("sms", "smtp", SMTP, {"provider"}),
        ("email", "smtp", {"host": "smtp.example.com", "prot": 25}, {"settings.from", "settings.prot"}),
        ("email", "smtp", SMTP | {"port": 70000, "tls": "sometimes"}, {"settings.port", "settings.tls"}),
        ("email", "smtp", SMTP | {"tls": "none", "password": PASSWORD}, {"settings.tls"}),
        ("webhook", "webhook", {"url": "file:///etc/passwd", "secret": "short"}, {"settings.url", "settings.secret"}),
        ("email", "smtp", SMTP | {"timeout_seconds": float("inf")}, {"settings.timeout_seconds"}),
    ],
)
def test_every_problem_of_a_configuration_is_named(
    channels: channel_pb2_grpc.ChannelServiceStub,
    tenant: Tenant,
    channel_name: str,
    provider: str,
    settings: dict[str, Any],
    expected: set[str],
) -> None:
    error = rpc_error(lambda: _set(channels, tenant, channel_name, provider, settings))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == expected
    assert PASSWORD not in (error.details() or "")


def test_an_unconfigured_channel_is_not_found_and_delete_restores_the_default(
    channels: channel_pb2_grpc.ChannelServiceStub, tenant: Tenant
) -> None:
    get = rpc_error(
        lambda: channels.GetChannelProvider(C.GetChannelProviderRequest(channel="sms"), metadata=tenant.auth)
    )
    assert get.code() == grpc.StatusCode.NOT_FOUND
    _set(channels, tenant, "sms", "log", {})
    channels.DeleteChannelProvider(C.DeleteChannelProviderRequest(channel="sms"), metadata=tenant.auth)
    again = rpc_error(
        lambda: channels.DeleteChannelProvider(C.DeleteChannelProviderRequest(channel="sms"), metadata=tenant.auth)
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND
    unknown = rpc_error(
        lambda: channels.GetChannelProvider(C.GetChannelProviderRequest(channel="fax"), metadata=tenant.auth)
    )
    assert set(field_violations(unknown)) == {"channel"}


def test_another_tenants_providers_are_invisible(
    suite: Suite, channels: channel_pb2_grpc.ChannelServiceStub, tenant: Tenant
) -> None:
    _set(channels, tenant, "sms", "webhook", HOOK | {"secret": SECRET})
    other = new_tenant(suite, "channels-other")
    assert (
        rpc_error(
            lambda: channels.GetChannelProvider(C.GetChannelProviderRequest(channel="sms"), metadata=other.auth)
        ).code()
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        list(channels.ListChannelProviders(C.ListChannelProvidersRequest(), metadata=other.auth).channel_providers)
        == []
    )
    assert (
        rpc_error(
            lambda: channels.DeleteChannelProvider(C.DeleteChannelProviderRequest(channel="sms"), metadata=other.auth)
        ).code()
        == grpc.StatusCode.NOT_FOUND
    )
    assert channels.GetChannelProvider(C.GetChannelProviderRequest(channel="sms"), metadata=tenant.auth).provider


def test_list_pages_by_channel(channels: channel_pb2_grpc.ChannelServiceStub, tenant: Tenant) -> None:
    for name in ("sms", "email", "push"):
        _set(channels, tenant, name, "log", {})
    first = channels.ListChannelProviders(C.ListChannelProvidersRequest(page_size=2), metadata=tenant.auth)
    second = channels.ListChannelProviders(
        C.ListChannelProvidersRequest(page_size=2, page_token=first.next_page_token), metadata=tenant.auth
    )
    assert [p.channel for page in (first, second) for p in page.channel_providers] == ["email", "push", "sms"]
    assert second.next_page_token == ""


@pytest.fixture(scope="module")
def keyless_api(suite: Suite) -> Iterator[str]:
    """A second API process on the suite's database, run without KALCIFER_SECRET_KEY."""
    port = free_port()
    env = suite.env | {"KALCIFER_SECRET_KEY": "", "API_PORT": str(port), "API_METRICS_PORT": "0"}
    log = (suite.log_dir / "api-keyless.log").open("ab")
    process = subprocess.Popen([str(BIN / "kalcifer-api")], env=env, stdout=log, stderr=log)
    log.close()
    try:
        wait_serving(f"127.0.0.1:{port}", process=process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)


def test_an_api_without_a_secret_key_refuses_to_store_a_secret_but_not_plain_settings(
    keyless_api: str, tenant: Tenant
) -> None:
    with grpc.insecure_channel(keyless_api) as opened:
        keyless = channel_pb2_grpc.ChannelServiceStub(opened)
        error = rpc_error(lambda: _set(keyless, tenant, "sms", "webhook", HOOK | {"secret": SECRET}))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "SECRET_KEY_NOT_CONFIGURED"
        assert SECRET not in (error.details() or "")
        assert _set(keyless, tenant, "email", "smtp", SMTP | {"tls": "tls"}).provider == "smtp"
        assert _set(keyless, tenant, "push", "log", {}).provider == "log"
