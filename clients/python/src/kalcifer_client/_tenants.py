"""TenantService: the operator's calls, made with the admin token (`KALCIFER_ADMIN_TOKEN`) as the credential."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from kalcifer.v1 import tenant_pb2, tenant_pb2_grpc

from kalcifer_client._pagination import paginate
from kalcifer_client._transport import Transport


class Tenants:
    """Tenants and their API keys. A raw key is in the answer that creates it, and never again."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = tenant_pb2_grpc.TenantServiceStub(transport.channel)

    async def create(self, name: str, *, request_id: str = "") -> tenant_pb2.CreateTenantResponse:
        """A new tenant and its first API key (`raw_key`; empty when a retry found the tenant already made)."""
        request = tenant_pb2.CreateTenantRequest(name=name, request_id=request_id)
        return await self._transport.call(self._stub.CreateTenant, request)

    async def get(self, tenant_id: str) -> tenant_pb2.Tenant:
        """One tenant."""
        return await self._transport.call(self._stub.GetTenant, tenant_pb2.GetTenantRequest(id=tenant_id))

    def list(self, *, page_size: int = 0) -> AsyncIterator[tenant_pb2.Tenant]:
        """Every tenant."""

        async def page(token: str) -> tuple[Sequence[tenant_pb2.Tenant], str]:
            request = tenant_pb2.ListTenantsRequest(page_size=page_size, page_token=token)
            response = await self._transport.call(self._stub.ListTenants, request)
            return response.tenants, response.next_page_token

        return paginate(page)

    async def create_key(self, tenant_id: str, name: str, *, request_id: str = "") -> tenant_pb2.CreateApiKeyResponse:
        """A new API key of the tenant (`raw_key` is shown only in this answer)."""
        request = tenant_pb2.CreateApiKeyRequest(tenant_id=tenant_id, name=name, request_id=request_id)
        return await self._transport.call(self._stub.CreateApiKey, request)

    def list_keys(self, tenant_id: str, *, page_size: int = 0) -> AsyncIterator[tenant_pb2.ApiKey]:
        """The tenant's API keys, revoked ones included (no raw keys)."""

        async def page(token: str) -> tuple[Sequence[tenant_pb2.ApiKey], str]:
            request = tenant_pb2.ListApiKeysRequest(tenant_id=tenant_id, page_size=page_size, page_token=token)
            response = await self._transport.call(self._stub.ListApiKeys, request)
            return response.api_keys, response.next_page_token

        return paginate(page)

    async def revoke_key(self, key_id: str, *, request_id: str = "") -> tenant_pb2.ApiKey:
        """Revoke an API key (effective on every API replica within API_KEY_CACHE_SECONDS)."""
        request = tenant_pb2.RevokeApiKeyRequest(id=key_id, request_id=request_id)
        return await self._transport.call(self._stub.RevokeApiKey, request)
