"""`kalcifer.v1.TenantService`: the operator's side (admin token): tenants and their API keys."""

from __future__ import annotations

from typing import Any, TypeVar

from kalcifer.v1 import tenant_pb2, tenant_pb2_grpc
from kalcifer_common.ids import parse_id
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.auth import hash_api_key
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.tenants import ApiKeyRecord, TenantRecord, mint_api_key, validated_name
from kalcifer_api.repo.marketing_base import Reply
from kalcifer_api.repo.tenants import TenantRepository

DEFAULT_KEY_NAME = "default"


def tenant_to_proto(tenant: TenantRecord) -> tenant_pb2.Tenant:
    """Domain -> wire."""
    return tenant_pb2.Tenant(
        id=str(tenant.id),
        name=tenant.name,
        create_time=to_timestamp(tenant.create_time),
        update_time=to_timestamp(tenant.update_time),
    )


def api_key_to_proto(key: ApiKeyRecord) -> tenant_pb2.ApiKey:
    """Domain -> wire; the hash never leaves the database."""
    return tenant_pb2.ApiKey(
        id=str(key.id),
        tenant_id=str(key.tenant_id),
        name=key.name,
        key_prefix=key.key_prefix,
        create_time=to_timestamp(key.create_time),
        revoke_time=to_timestamp(key.revoke_time),
        revoked=key.revoke_time is not None,
    )


_WithRawKey = TypeVar("_WithRawKey", tenant_pb2.CreateTenantResponse, tenant_pb2.CreateApiKeyResponse)


def _without_raw_key(response: _WithRawKey) -> _WithRawKey:
    """What an idempotency record keeps of an answer: everything but the raw key, which is shown once only."""
    kept = type(response)()
    kept.CopyFrom(response)
    kept.raw_key = ""
    return kept


def _next_token(rows: list[Any], limit: int, query: object) -> str:
    if len(rows) <= limit:
        return ""
    last = rows[limit - 1]
    return encode_page_token(PageCursor(time_key(last.create_time), str(last.id)), query=query)


@map_errors
class TenantServicer(tenant_pb2_grpc.TenantServiceServicer):
    """Tenants and API keys. Raw keys are returned once, at creation, and stored only as SHA-256 hashes."""

    def __init__(self, tenants: TenantRepository) -> None:
        self._tenants = tenants

    async def CreateTenant(
        self, request: tenant_pb2.CreateTenantRequest, context: Any
    ) -> tenant_pb2.CreateTenantResponse:
        name = validated_name(request.name, "name")
        key = mint_api_key()
        reply: Reply[tuple[TenantRecord, ApiKeyRecord], tenant_pb2.CreateTenantResponse] = Reply(
            method="CreateTenant",
            request=request,
            response_type=tenant_pb2.CreateTenantResponse,
            present=lambda made: tenant_pb2.CreateTenantResponse(
                tenant=tenant_to_proto(made[0]), api_key=api_key_to_proto(made[1]), raw_key=key.raw_key
            ),
            remembered=_without_raw_key,
        )
        return await self._tenants.create_tenant(
            name,
            key_name=DEFAULT_KEY_NAME,
            key_hash=hash_api_key(key.raw_key),
            key_prefix=key.key_prefix,
            reply=reply,
        )

    async def GetTenant(self, request: tenant_pb2.GetTenantRequest, context: Any) -> tenant_pb2.Tenant:
        return tenant_to_proto(await self._tenants.get_tenant(parse_id(request.id, "id")))

    async def ListTenants(self, request: tenant_pb2.ListTenantsRequest, context: Any) -> tenant_pb2.ListTenantsResponse:
        limit = page_size_of(request.page_size)
        query = {"list": "tenants"}
        rows = await self._tenants.list_tenants(limit=limit, after=decode_page_token(request.page_token, query=query))
        return tenant_pb2.ListTenantsResponse(
            tenants=[tenant_to_proto(t) for t in rows[:limit]], next_page_token=_next_token(rows, limit, query)
        )

    async def CreateApiKey(
        self, request: tenant_pb2.CreateApiKeyRequest, context: Any
    ) -> tenant_pb2.CreateApiKeyResponse:
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        name = validated_name(request.name or DEFAULT_KEY_NAME, "name")
        key = mint_api_key()
        reply: Reply[ApiKeyRecord, tenant_pb2.CreateApiKeyResponse] = Reply(
            method="CreateApiKey",
            request=request,
            response_type=tenant_pb2.CreateApiKeyResponse,
            present=lambda made: tenant_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(made), raw_key=key.raw_key),
            remembered=_without_raw_key,
        )
        return await self._tenants.create_api_key(
            tenant_id,
            name=name,
            key_hash=hash_api_key(key.raw_key),
            key_prefix=key.key_prefix,
            reply=reply,
        )

    async def ListApiKeys(self, request: tenant_pb2.ListApiKeysRequest, context: Any) -> tenant_pb2.ListApiKeysResponse:
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        limit = page_size_of(request.page_size)
        query = {"list": "api_keys", "tenant_id": str(tenant_id)}
        rows = await self._tenants.list_api_keys(
            tenant_id, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        return tenant_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in rows[:limit]], next_page_token=_next_token(rows, limit, query)
        )

    async def RevokeApiKey(self, request: tenant_pb2.RevokeApiKeyRequest, context: Any) -> tenant_pb2.ApiKey:
        return api_key_to_proto(await self._tenants.revoke_api_key(parse_id(request.id, "id")))
