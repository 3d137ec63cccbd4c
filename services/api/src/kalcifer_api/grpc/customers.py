"""`kalcifer.v1.CustomerService`: customer profiles by external id (= participant id)."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from kalcifer.v1 import customer_pb2, customer_pb2_grpc
from kalcifer_common.errors import InvalidArgument
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.customers import (
    CustomerRecord,
    tag_problem,
    validated_channels,
    validated_external_id,
    validated_patch,
    validated_tags,
)
from kalcifer_api.repo.customers import CustomerRepository
from kalcifer_api.repo.marketing_base import Reply


def customer_to_proto(customer: CustomerRecord) -> customer_pb2.Customer:
    """Domain -> wire."""
    return customer_pb2.Customer(
        external_id=customer.external_id,
        attributes=dict_to_struct(customer.attributes),
        tags=customer.tags,
        preferences=customer.preferences,
        timezone=customer.timezone or "",
        email=customer.email or "",
        phone=customer.phone or "",
        create_time=to_timestamp(customer.create_time),
        update_time=to_timestamp(customer.update_time),
    )


def _empty(_: None) -> Empty:
    return Empty()


@map_errors
class CustomerServicer(customer_pb2_grpc.CustomerServiceServicer):
    """Upsert-merge semantics keep profile sync from external systems simple: send what you know, when you know it."""

    def __init__(self, customers: CustomerRepository) -> None:
        self._customers = customers

    def _reply(self, method: str, request: Any) -> Reply[CustomerRecord, customer_pb2.Customer]:
        return Reply(method, request, customer_pb2.Customer, customer_to_proto)

    async def UpsertCustomer(self, request: customer_pb2.UpsertCustomerRequest, context: Any) -> customer_pb2.Customer:
        customer = request.customer
        patch = validated_patch(
            external_id=customer.external_id,
            attributes=struct_to_dict(customer.attributes),
            tags=list(customer.tags),
            preferences=dict(customer.preferences),
            timezone=customer.timezone,
            email=customer.email,
            phone=customer.phone,
        )
        return await self._customers.upsert(patch, self._reply("UpsertCustomer", request))

    async def GetCustomer(self, request: customer_pb2.GetCustomerRequest, context: Any) -> customer_pb2.Customer:
        return customer_to_proto(await self._customers.get(validated_external_id(request.external_id)))

    async def ListCustomers(
        self, request: customer_pb2.ListCustomersRequest, context: Any
    ) -> customer_pb2.ListCustomersResponse:
        limit = page_size_of(request.page_size)
        if request.tag and (problem := tag_problem(request.tag)):
            raise InvalidArgument.single("tag", problem)
        query = {"list": "customers", "tag": request.tag}
        rows = await self._customers.list_page(
            tag=request.tag, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        token = ""
        if len(rows) > limit:
            row_id, last = rows[limit - 1]
            token = encode_page_token(PageCursor(time_key(last.create_time), str(row_id)), query=query)
        return customer_pb2.ListCustomersResponse(
            customers=[customer_to_proto(customer) for _, customer in rows[:limit]], next_page_token=token
        )

    async def AddCustomerTags(
        self, request: customer_pb2.AddCustomerTagsRequest, context: Any
    ) -> customer_pb2.Customer:
        external_id = validated_external_id(request.external_id)
        tags = validated_tags(request.tags)
        return await self._customers.add_tags(external_id, tags, self._reply("AddCustomerTags", request))

    async def RemoveCustomerTags(
        self, request: customer_pb2.RemoveCustomerTagsRequest, context: Any
    ) -> customer_pb2.Customer:
        external_id = validated_external_id(request.external_id)
        tags = validated_tags(request.tags)
        return await self._customers.remove_tags(external_id, tags, self._reply("RemoveCustomerTags", request))

    async def SetCustomerPreferences(
        self, request: customer_pb2.SetCustomerPreferencesRequest, context: Any
    ) -> customer_pb2.Customer:
        external_id = validated_external_id(request.external_id)
        channels = validated_channels(dict(request.channels))
        return await self._customers.set_preferences(
            external_id, channels, self._reply("SetCustomerPreferences", request)
        )

    async def DeleteCustomer(self, request: customer_pb2.DeleteCustomerRequest, context: Any) -> Empty:
        external_id = validated_external_id(request.external_id)
        return await self._customers.delete(external_id, Reply("DeleteCustomer", request, Empty, _empty))
