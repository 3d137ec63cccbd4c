"""`kalcifer.v1.ChannelService`: the provider each channel of the tenant sends through (SPEC 7).

Secret settings are write-only: they are sealed before they are stored, answered only by name, and an
idempotency record keeps only keyed digests of them (so a retry with another secret is still told apart).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from kalcifer.v1 import channel_pb2, channel_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.secrets import SecretBox
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.channels import (
    ProviderChange,
    ProviderRecord,
    StoredSecrets,
    channel_violations,
    provider_change,
    require_secret_key,
    secret_fingerprints,
)
from kalcifer_api.domain.marketing_common import non_finite_path
from kalcifer_api.repo.channels import ChannelRepository
from kalcifer_api.repo.marketing_base import Reply


def provider_to_proto(record: ProviderRecord) -> channel_pb2.ChannelProvider:
    """Domain -> wire: plain settings, and the names (only) of the secrets set."""
    return channel_pb2.ChannelProvider(
        channel=record.channel,
        provider=record.provider,
        settings=dict_to_struct(record.settings),
        secret_settings=list(record.secret_names),
        create_time=to_timestamp(record.create_time),
        update_time=to_timestamp(record.update_time),
    )


def _without_secrets(
    request: channel_pb2.SetChannelProviderRequest, fingerprints: dict[str, str]
) -> channel_pb2.SetChannelProviderRequest:
    """The request as its idempotency record may know it: each secret replaced by its keyed digest."""
    remembered = channel_pb2.SetChannelProviderRequest()
    remembered.CopyFrom(request)
    for name, fingerprint in fingerprints.items():
        remembered.settings.fields[name].string_value = f"hmac-sha256:{fingerprint}"
    return remembered


def _empty(_: None) -> Empty:
    return Empty()


def _require_channel(channel: str) -> None:
    found = channel_violations(channel)
    if found:
        raise InvalidArgument(found)


@map_errors
class ChannelServicer(channel_pb2_grpc.ChannelServiceServicer):
    """Set, get, list and delete channel providers; secrets are sealed with the operator's key."""

    def __init__(self, channels: ChannelRepository, secrets: SecretBox) -> None:
        self._channels = channels
        self._secrets = secrets

    async def SetChannelProvider(
        self, request: channel_pb2.SetChannelProviderRequest, context: Any
    ) -> channel_pb2.ChannelProvider:
        settings = struct_to_dict(request.settings)
        if path := non_finite_path(settings, "settings"):
            raise InvalidArgument([FieldViolation(path, "must hold only finite numbers")])
        require_secret_key(self._secrets, request.provider, settings)
        tenant_id = self._channels.tenant_id

        def plan(stored: StoredSecrets | None) -> ProviderChange:
            return provider_change(self._secrets, tenant_id, request.channel, request.provider, settings, stored)

        remembered = _without_secrets(request, secret_fingerprints(self._secrets, request.provider, settings))
        reply: Reply[ProviderRecord, channel_pb2.ChannelProvider] = Reply(
            "SetChannelProvider", remembered, channel_pb2.ChannelProvider, provider_to_proto
        )
        return await self._channels.set(request.channel, plan, reply)

    async def GetChannelProvider(
        self, request: channel_pb2.GetChannelProviderRequest, context: Any
    ) -> channel_pb2.ChannelProvider:
        _require_channel(request.channel)
        return provider_to_proto(await self._channels.get(request.channel))

    async def ListChannelProviders(
        self, request: channel_pb2.ListChannelProvidersRequest, context: Any
    ) -> channel_pb2.ListChannelProvidersResponse:
        limit = page_size_of(request.page_size)
        query = {"list": "channel_providers"}
        rows = await self._channels.list_page(limit=limit, after=decode_page_token(request.page_token, query=query))
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1].channel
            token = encode_page_token(PageCursor(last, last), query=query)
        return channel_pb2.ListChannelProvidersResponse(
            channel_providers=[provider_to_proto(row) for row in rows[:limit]], next_page_token=token
        )

    async def DeleteChannelProvider(self, request: channel_pb2.DeleteChannelProviderRequest, context: Any) -> Empty:
        _require_channel(request.channel)
        return await self._channels.delete(request.channel, Reply("DeleteChannelProvider", request, Empty, _empty))
