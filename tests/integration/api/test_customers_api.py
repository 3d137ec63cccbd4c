"""CustomerService on the real API process: upsert-merge, validation, tags, preferences, pagination, deletion
and request_id replay."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from kalcifer.v1 import customer_pb2
from kalcifer_common.structs import dict_to_struct, struct_to_dict

from tests.integration.api.marketing import Stubs
from tests.support.processes import Suite
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant, new_tenant

C = customer_pb2


@pytest.fixture
def tenant(suite: Suite) -> Tenant:
    """A tenant of each test's own (overrides the module's): the tests count and page through its customers."""
    return new_tenant(suite, "customers")


def _upsert(stubs: Stubs, tenant: Tenant, request_id: str = "", **fields: Any) -> C.Customer:
    customer: C.Customer = stubs.customers.UpsertCustomer(
        C.UpsertCustomerRequest(customer=C.Customer(**fields), request_id=request_id), metadata=tenant.auth
    )
    return customer


def test_upsert_creates_then_merges_the_profile(stubs: Stubs, tenant: Tenant) -> None:
    created = _upsert(
        stubs,
        tenant,
        external_id="u-1",
        attributes=dict_to_struct({"tier": "silver", "score": 3, "city": "Lyon"}),
        tags=["new", "fr", "new"],
        preferences={"email": True},
        timezone="Europe/Paris",
        email="ann@example.com",
        phone="+33612345678",
    )
    assert created.tags == ["new", "fr"]
    assert created.create_time == created.update_time

    merged = _upsert(
        stubs,
        tenant,
        external_id="u-1",
        attributes=dict_to_struct({"tier": "gold", "city": None, "plan": {"seats": 2}}),
        tags=["fr", "vip"],
        preferences={"sms": False},
        email="ann@new.example.org",
    )
    assert struct_to_dict(merged.attributes) == {"tier": "gold", "score": 3, "plan": {"seats": 2}}
    assert merged.tags == ["new", "fr", "vip"]
    assert dict(merged.preferences) == {"email": True, "sms": False}
    assert (merged.timezone, merged.email, merged.phone) == ("Europe/Paris", "ann@new.example.org", "+33612345678")
    assert merged.create_time == created.create_time
    got = stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="u-1"), metadata=tenant.auth)
    assert got == merged


def test_every_change_of_a_profile_moves_its_update_time(stubs: Stubs, tenant: Tenant) -> None:
    # segment_entry finds the customers who joined a segment by their update_time (the scheduler's entries).
    auth = tenant.auth
    changes: list[Callable[[], C.Customer]] = [
        lambda: _upsert(stubs, tenant, external_id="moved", attributes=dict_to_struct({"tier": "silver"})),
        lambda: _upsert(stubs, tenant, external_id="moved", attributes=dict_to_struct({"tier": "gold"})),
        lambda: stubs.customers.AddCustomerTags(
            C.AddCustomerTagsRequest(external_id="moved", tags=["vip"]), metadata=auth
        ),
        lambda: stubs.customers.RemoveCustomerTags(
            C.RemoveCustomerTagsRequest(external_id="moved", tags=["vip"]), metadata=auth
        ),
        lambda: stubs.customers.SetCustomerPreferences(
            C.SetCustomerPreferencesRequest(external_id="moved", channels={"sms": True}), metadata=auth
        ),
    ]

    times = [change().update_time.ToDatetime() for change in changes]

    assert times == sorted(set(times)), "each change later than the one before"


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"external_id": ""}, {"external_id": "is required"}),
        ({"external_id": "x" * 256}, {"external_id": "must be at most 255 characters"}),
        ({"external_id": "u", "timezone": "Mars/Olympus"}, {"timezone"}),
        ({"external_id": "u", "timezone": "../etc/passwd"}, {"timezone"}),
        ({"external_id": "u", "email": "not-an-email"}, {"email"}),
        ({"external_id": "u", "email": "a@b"}, {"email"}),
        ({"external_id": "u", "phone": "0612345678"}, {"phone"}),
        ({"external_id": "u", "tags": ["ok", " "]}, {"tags[1]": "must not be empty"}),
        ({"external_id": "u", "tags": [" padded"]}, {"tags[0]"}),
        ({"external_id": "u", "preferences": {"fax": True}}, {"preferences.fax"}),
        (
            {"external_id": "", "timezone": "Nowhere", "email": "x", "phone": "1"},
            {"external_id", "timezone", "email", "phone"},
        ),
    ],
)
def test_upsert_rejects_bad_fields_naming_each(
    stubs: Stubs, tenant: Tenant, fields: dict[str, Any], violations: dict[str, str] | set[str]
) -> None:
    error = rpc_error(lambda: _upsert(stubs, tenant, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = field_violations(error)
    if isinstance(violations, dict):
        assert found == violations
    else:
        assert set(found) == violations


def test_non_finite_attribute_numbers_are_field_violations(stubs: Stubs, tenant: Tenant) -> None:
    error = rpc_error(
        lambda: _upsert(stubs, tenant, external_id="nan", attributes=dict_to_struct({"score": float("nan")}))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"attributes.score"}


def test_get_needs_an_existing_external_id(stubs: Stubs, tenant: Tenant) -> None:
    empty = rpc_error(lambda: stubs.customers.GetCustomer(C.GetCustomerRequest(), metadata=tenant.auth))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(empty)) == {"external_id"}
    missing = rpc_error(
        lambda: stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="ghost"), metadata=tenant.auth)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_list_pages_oldest_first_and_filters_by_tag(stubs: Stubs, tenant: Tenant) -> None:
    for index in range(5):
        _upsert(stubs, tenant, external_id=f"p-{index}", tags=["even"] if index % 2 == 0 else ["odd"])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stubs.customers.ListCustomers(
            C.ListCustomersRequest(page_size=2, page_token=token), metadata=tenant.auth
        )
        seen += [c.external_id for c in page.customers]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"p-{index}" for index in range(5)]
    assert pages == 3
    even = stubs.customers.ListCustomers(C.ListCustomersRequest(tag="even"), metadata=tenant.auth)
    assert [c.external_id for c in even.customers] == ["p-0", "p-2", "p-4"]
    assert even.next_page_token == ""
    capped = stubs.customers.ListCustomers(C.ListCustomersRequest(page_size=10**6), metadata=tenant.auth)
    assert len(capped.customers) == 5


def test_list_rejects_negative_page_size_and_foreign_tokens(stubs: Stubs, tenant: Tenant) -> None:
    for index in range(3):
        _upsert(stubs, tenant, external_id=f"t-{index}", tags=["a"])
    negative = rpc_error(
        lambda: stubs.customers.ListCustomers(C.ListCustomersRequest(page_size=-1), metadata=tenant.auth)
    )
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(negative)) == {"page_size"}
    token = stubs.customers.ListCustomers(
        C.ListCustomersRequest(page_size=1, tag="a"), metadata=tenant.auth
    ).next_page_token
    assert token
    foreign = rpc_error(
        lambda: stubs.customers.ListCustomers(C.ListCustomersRequest(page_token=token), metadata=tenant.auth)
    )
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(foreign)) == {"page_token"}
    bad_tag = rpc_error(lambda: stubs.customers.ListCustomers(C.ListCustomersRequest(tag=" a"), metadata=tenant.auth))
    assert set(field_violations(bad_tag)) == {"tag"}
    forged = rpc_error(
        lambda: stubs.customers.ListCustomers(C.ListCustomersRequest(page_token="garbage!"), metadata=tenant.auth)
    )
    assert set(field_violations(forged)) == {"page_token"}


def test_tags_are_added_once_and_removed(stubs: Stubs, tenant: Tenant) -> None:
    _upsert(stubs, tenant, external_id="tagged", tags=["a"])
    added = stubs.customers.AddCustomerTags(
        C.AddCustomerTagsRequest(external_id="tagged", tags=["b", "a", "c", "b"]), metadata=tenant.auth
    )
    assert added.tags == ["a", "b", "c"]
    removed = stubs.customers.RemoveCustomerTags(
        C.RemoveCustomerTagsRequest(external_id="tagged", tags=["a", "zzz"]), metadata=tenant.auth
    )
    assert removed.tags == ["b", "c"]


def test_tag_calls_validate_and_need_the_customer(stubs: Stubs, tenant: Tenant) -> None:
    _upsert(stubs, tenant, external_id="v")
    for request, fields in [
        (C.AddCustomerTagsRequest(external_id="v"), {"tags"}),
        (C.AddCustomerTagsRequest(external_id="v", tags=["ok", ""]), {"tags[1]"}),
        (C.AddCustomerTagsRequest(external_id="v", tags=["x" * 101]), {"tags[0]"}),
        (C.AddCustomerTagsRequest(tags=["ok"]), {"external_id"}),
    ]:
        error = rpc_error(functools.partial(stubs.customers.AddCustomerTags, request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert set(field_violations(error)) == fields
    remove_empty = rpc_error(
        lambda: stubs.customers.RemoveCustomerTags(C.RemoveCustomerTagsRequest(external_id="v"), metadata=tenant.auth)
    )
    assert set(field_violations(remove_empty)) == {"tags"}
    for call in (
        lambda: stubs.customers.AddCustomerTags(
            C.AddCustomerTagsRequest(external_id="ghost", tags=["a"]), metadata=tenant.auth
        ),
        lambda: stubs.customers.RemoveCustomerTags(
            C.RemoveCustomerTagsRequest(external_id="ghost", tags=["a"]), metadata=tenant.auth
        ),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND


def test_preferences_merge_per_channel(stubs: Stubs, tenant: Tenant) -> None:
    _upsert(stubs, tenant, external_id="prefs", preferences={"email": True, "push": True})
    updated = stubs.customers.SetCustomerPreferences(
        C.SetCustomerPreferencesRequest(external_id="prefs", channels={"email": False, "sms": True}),
        metadata=tenant.auth,
    )
    assert dict(updated.preferences) == {"email": False, "push": True, "sms": True}
    bad = rpc_error(
        lambda: stubs.customers.SetCustomerPreferences(
            C.SetCustomerPreferencesRequest(external_id="prefs", channels={"fax": True, "carrier_pigeon": False}),
            metadata=tenant.auth,
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad)) == {"channels.fax", "channels.carrier_pigeon"}
    empty = rpc_error(
        lambda: stubs.customers.SetCustomerPreferences(
            C.SetCustomerPreferencesRequest(external_id="prefs"), metadata=tenant.auth
        )
    )
    assert set(field_violations(empty)) == {"channels"}
    missing = rpc_error(
        lambda: stubs.customers.SetCustomerPreferences(
            C.SetCustomerPreferencesRequest(external_id="ghost", channels={"sms": True}), metadata=tenant.auth
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_delete_erases_the_profile(stubs: Stubs, tenant: Tenant) -> None:
    _upsert(stubs, tenant, external_id="gone", email="gone@example.com", attributes=dict_to_struct({"a": 1}))
    stubs.customers.DeleteCustomer(C.DeleteCustomerRequest(external_id="gone"), metadata=tenant.auth)
    for call in (
        lambda: stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="gone"), metadata=tenant.auth),
        lambda: stubs.customers.DeleteCustomer(C.DeleteCustomerRequest(external_id="gone"), metadata=tenant.auth),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
    again = _upsert(stubs, tenant, external_id="gone")
    assert (again.email, struct_to_dict(again.attributes)) == ("", {})
    invalid = rpc_error(lambda: stubs.customers.DeleteCustomer(C.DeleteCustomerRequest(), metadata=tenant.auth))
    assert set(field_violations(invalid)) == {"external_id"}


def test_request_id_replays_the_first_answer_and_changes_nothing(stubs: Stubs, tenant: Tenant) -> None:
    _upsert(stubs, tenant, external_id="idem")
    add = C.AddCustomerTagsRequest(external_id="idem", tags=["once"], request_id="add-1")
    first = stubs.customers.AddCustomerTags(add, metadata=tenant.auth)
    stubs.customers.RemoveCustomerTags(
        C.RemoveCustomerTagsRequest(external_id="idem", tags=["once"]), metadata=tenant.auth
    )
    replayed = stubs.customers.AddCustomerTags(add, metadata=tenant.auth)
    assert replayed == first
    stored = stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="idem"), metadata=tenant.auth)
    assert "once" not in stored.tags

    upsert = C.UpsertCustomerRequest(customer=C.Customer(external_id="idem", email="a@example.com"), request_id="u-1")
    first_upsert = stubs.customers.UpsertCustomer(upsert, metadata=tenant.auth)
    assert stubs.customers.UpsertCustomer(upsert, metadata=tenant.auth) == first_upsert

    reused = rpc_error(
        lambda: stubs.customers.AddCustomerTags(
            C.AddCustomerTagsRequest(external_id="idem", tags=["other"], request_id="add-1"), metadata=tenant.auth
        )
    )
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(reused)) == {"request_id"}

    delete = C.DeleteCustomerRequest(external_id="idem", request_id="del-1")
    stubs.customers.DeleteCustomer(delete, metadata=tenant.auth)
    stubs.customers.DeleteCustomer(delete, metadata=tenant.auth)  # replayed, not NOT_FOUND


def test_the_same_request_id_in_another_tenant_is_independent(suite: Suite, stubs: Stubs, tenant: Tenant) -> None:
    other = new_tenant(suite, "customers-other")
    request = C.UpsertCustomerRequest(customer=C.Customer(external_id="shared"), request_id="same")
    stubs.customers.UpsertCustomer(request, metadata=tenant.auth)
    theirs = stubs.customers.UpsertCustomer(request, metadata=other.auth)
    # Not a replay of the first tenant's answer: the other tenant's profile was really created.
    stored = stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="shared"), metadata=other.auth)
    assert stored == theirs
