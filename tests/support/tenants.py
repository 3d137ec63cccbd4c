"""Tenants made through the public TenantService, as an operator makes them, each with its raw API key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from kalcifer.v1 import tenant_pb2, tenant_pb2_grpc

from tests.support.processes import Suite
from tests.support.rpc import bearer


@dataclass(frozen=True)
class Tenant:
    """A tenant made through TenantService, with its raw API key."""

    id: uuid.UUID
    key: str

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        """Call metadata carrying the key."""
        return bearer(self.key)


def new_tenant(suite: Suite, name: str) -> Tenant:
    """A fresh tenant of the suite's API (so tests never see each other's rows)."""
    with grpc.insecure_channel(suite.address("api")) as channel:
        created = tenant_pb2_grpc.TenantServiceStub(channel).CreateTenant(
            tenant_pb2.CreateTenantRequest(name=name), metadata=bearer(suite.admin_token)
        )
    return Tenant(uuid.UUID(created.tenant.id), created.raw_key)
