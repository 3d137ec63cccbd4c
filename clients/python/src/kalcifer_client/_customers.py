"""CustomerService: the marketing layer's participants with a profile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from kalcifer.v1 import customer_pb2, customer_pb2_grpc

from kalcifer_client._pagination import paginate
from kalcifer_client._transport import Transport
from kalcifer_client.graphs import dict_to_struct


class Customers:
    """Customer profiles, keyed by `external_id` (the participant id)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = customer_pb2_grpc.CustomerServiceStub(transport.channel)

    async def upsert(
        self,
        external_id: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        email: str = "",
        phone: str = "",
        timezone: str = "",
        tags: Sequence[str] = (),
        request_id: str = "",
    ) -> customer_pb2.Customer:
        """Create the customer or update its profile (empty fields leave what is stored as it is)."""
        customer = customer_pb2.Customer(
            external_id=external_id,
            attributes=dict_to_struct(attributes),
            tags=list(tags),
            email=email,
            phone=phone,
            timezone=timezone,
        )
        request = customer_pb2.UpsertCustomerRequest(customer=customer, request_id=request_id)
        return await self._transport.call(self._stub.UpsertCustomer, request)

    async def get(self, external_id: str) -> customer_pb2.Customer:
        """One customer."""
        request = customer_pb2.GetCustomerRequest(external_id=external_id)
        return await self._transport.call(self._stub.GetCustomer, request)

    def list(self, *, tag: str = "", page_size: int = 0) -> AsyncIterator[customer_pb2.Customer]:
        """Every customer (with the tag, when given)."""

        async def page(token: str) -> tuple[Sequence[customer_pb2.Customer], str]:
            request = customer_pb2.ListCustomersRequest(tag=tag, page_size=page_size, page_token=token)
            response = await self._transport.call(self._stub.ListCustomers, request)
            return response.customers, response.next_page_token

        return paginate(page)

    async def add_tags(self, external_id: str, tags: Sequence[str], *, request_id: str = "") -> customer_pb2.Customer:
        """Add tags to the customer."""
        request = customer_pb2.AddCustomerTagsRequest(external_id=external_id, tags=list(tags), request_id=request_id)
        return await self._transport.call(self._stub.AddCustomerTags, request)
