"""SegmentService on the real API process: rule validation with precise field violations, CRUD with etags and
update masks, pagination, deletion rules and request_id replay."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from kalcifer.v1 import journey_pb2, segment_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.marketing import Stubs, seed_flow
from tests.support.processes import Suite
from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

S = segment_pb2
ALL, ANY = S.SEGMENT_MATCH_ALL, S.SEGMENT_MATCH_ANY


@pytest.fixture
def tenant(suite: Suite) -> Tenant:
    """A tenant of each test's own (overrides the module's): the tests count and page through its segments."""
    return new_tenant(suite, "segments")


def value(python: Any) -> struct_pb2.Value:
    wrapped = struct_pb2.Value()
    if python is None:
        wrapped.null_value = struct_pb2.NULL_VALUE
    elif isinstance(python, bool):
        wrapped.bool_value = python
    elif isinstance(python, int | float):
        wrapped.number_value = python
    elif isinstance(python, str):
        wrapped.string_value = python
    else:
        wrapped.list_value.extend(python)
    return wrapped


def rule(field: str, operator: str, operand: Any = ...) -> S.SegmentRule:
    proto = S.SegmentRule(field=field, operator=operator)
    if operand is not ...:
        proto.value.CopyFrom(value(operand))
    return proto


def _create(stubs: Stubs, tenant: Tenant, name: str = "vips", request_id: str = "", **fields: Any) -> S.Segment:
    fields.setdefault("match", ALL)
    fields.setdefault("rules", [rule("attributes.tier", "eq", "gold")])
    segment: S.Segment = stubs.segments.CreateSegment(
        S.CreateSegmentRequest(segment=S.Segment(name=name, **fields), request_id=request_id), metadata=tenant.auth
    )
    return segment


def test_create_stores_every_operator_and_get_returns_it(stubs: Stubs, tenant: Tenant) -> None:
    rules = [
        rule("attributes.tier", "eq", "gold"),
        rule("attributes.tier", "neq", None),
        rule("attributes.score", "gt", 10),
        rule("attributes.signup", "lt", "2026-01-01"),
        rule("tags", "contains", "vip"),
        rule("timezone", "in", ["Europe/Paris", "Europe/Lisbon"]),
        rule("preferences.email", "not_in", [False]),
    ]
    created = _create(stubs, tenant, match=ANY, rules=rules, description="best customers")
    assert uuid.UUID(created.id)
    assert (created.name, created.match, created.description) == ("vips", ANY, "best customers")
    assert list(created.rules) == rules
    assert created.etag
    got = stubs.segments.GetSegment(S.GetSegmentRequest(id=created.id), metadata=tenant.auth)
    assert got == created


@pytest.mark.parametrize(
    ("segment", "violations"),
    [
        (S.Segment(match=ALL, rules=[rule("tags", "contains", "a")]), {"name"}),
        (S.Segment(name="x", rules=[rule("tags", "contains", "a")]), {"match"}),
        (S.Segment(name="x", match=ALL), {"rules"}),
        (
            S.Segment(
                name="x",
                match=ALL,
                rules=[rule("tags", "contains", "a"), rule("email", "eq", "a@b.c"), rule("tier", "like", "g")],
            ),
            {"rules[2].field", "rules[2].operator"},
        ),
        (S.Segment(name="x", match=ALL, rules=[rule("", "eq", 1)]), {"rules[0].field"}),
        (S.Segment(name="x", match=ALL, rules=[rule("attributes", "eq", 1)]), {"rules[0].field"}),
        (S.Segment(name="x", match=ALL, rules=[rule("attributes..tier", "eq", 1)]), {"rules[0].field"}),
        (S.Segment(name="x", match=ALL, rules=[rule("email.domain", "eq", 1)]), {"rules[0].field"}),
        (S.Segment(name="x", match=ALL, rules=[rule("preferences.fax", "eq", True)]), {"rules[0].field"}),
        (S.Segment(name="x", match=ALL, rules=[rule("tags", "contains")]), {"rules[0].value"}),
        (S.Segment(name="x", match=ALL, rules=[rule("tags", "in", "vip")]), {"rules[0].value"}),
        (S.Segment(name="x", match=ALL, rules=[rule("tags", "not_in", [])]), {"rules[0].value"}),
        (S.Segment(name="x", match=ALL, rules=[rule("attributes.n", "gt", True)]), {"rules[0].value"}),
        (S.Segment(name="x", match=ALL, rules=[rule("attributes.n", "eq", ["a"])]), {"rules[0].value"}),
        (S.Segment(name="x", match=ALL, rules=[rule("tags", "", "a")]), {"rules[0].operator"}),
        (S.Segment(name="x" * 201, match=ALL, rules=[rule("tags", "contains", "a")]), {"name"}),
    ],
)
def test_create_names_every_bad_field(stubs: Stubs, tenant: Tenant, segment: S.Segment, violations: set[str]) -> None:
    error = rpc_error(
        lambda: stubs.segments.CreateSegment(S.CreateSegmentRequest(segment=segment), metadata=tenant.auth)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == violations


def test_unknown_operator_is_described(stubs: Stubs, tenant: Tenant) -> None:
    error = rpc_error(lambda: _create(stubs, tenant, rules=[rule("tags", "matches", "a")]))
    assert "'matches' is not an operator" in field_violations(error)["rules[0].operator"]


def test_names_are_unique_per_tenant(suite: Suite, stubs: Stubs, tenant: Tenant) -> None:
    _create(stubs, tenant, name="dup")
    error = rpc_error(lambda: _create(stubs, tenant, name="dup"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _create(stubs, new_tenant(suite, "other"), name="dup").name == "dup"


def test_racing_creates_of_one_name_make_one_segment(stubs: Stubs, tenant: Tenant) -> None:
    def attempt(_: int) -> grpc.StatusCode:
        try:
            _create(stubs, tenant, name="raced")
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(attempt, range(6)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS}


def test_get_and_delete_need_a_valid_existing_id(stubs: Stubs, tenant: Tenant) -> None:
    for call in (
        lambda: stubs.segments.GetSegment(S.GetSegmentRequest(id="nope"), metadata=tenant.auth),
        lambda: stubs.segments.DeleteSegment(S.DeleteSegmentRequest(id=""), metadata=tenant.auth),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"id"}
    ghost = str(uuid.uuid4())
    for call in (
        lambda: stubs.segments.GetSegment(S.GetSegmentRequest(id=ghost), metadata=tenant.auth),
        lambda: stubs.segments.DeleteSegment(S.DeleteSegmentRequest(id=ghost), metadata=tenant.auth),
        lambda: stubs.segments.UpdateSegment(
            S.UpdateSegmentRequest(
                segment=S.Segment(id=ghost, name="n"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=tenant.auth,
        ),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND


def test_list_pages_newest_first(stubs: Stubs, tenant: Tenant) -> None:
    names = [f"s{index}" for index in range(5)]
    for name in names:
        _create(stubs, tenant, name=name)
    seen: list[str] = []
    token = ""
    while True:
        page = stubs.segments.ListSegments(S.ListSegmentsRequest(page_size=2, page_token=token), metadata=tenant.auth)
        seen += [s.name for s in page.segments]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))
    negative = rpc_error(lambda: stubs.segments.ListSegments(S.ListSegmentsRequest(page_size=-5), metadata=tenant.auth))
    assert set(field_violations(negative)) == {"page_size"}
    forged = rpc_error(
        lambda: stubs.segments.ListSegments(S.ListSegmentsRequest(page_token="abc"), metadata=tenant.auth)
    )
    assert set(field_violations(forged)) == {"page_token"}


def test_update_follows_the_mask_and_the_etag(stubs: Stubs, tenant: Tenant) -> None:
    created = _create(stubs, tenant, name="before", description="d")
    renamed = stubs.segments.UpdateSegment(
        S.UpdateSegmentRequest(
            segment=S.Segment(id=created.id, name="after", match=ANY, etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=tenant.auth,
    )
    assert (renamed.name, renamed.match, renamed.description) == ("after", ALL, "d")
    assert list(renamed.rules) == list(created.rules)
    assert renamed.etag != created.etag
    stale = rpc_error(
        lambda: stubs.segments.UpdateSegment(
            S.UpdateSegmentRequest(
                segment=S.Segment(id=created.id, name="x", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=tenant.auth,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    unknown = rpc_error(
        lambda: stubs.segments.UpdateSegment(
            S.UpdateSegmentRequest(
                segment=S.Segment(id=created.id, name="x"), update_mask=field_mask_pb2.FieldMask(paths=["name", "id"])
            ),
            metadata=tenant.auth,
        )
    )
    assert set(field_violations(unknown)) == {"update_mask.paths[1]"}
    whole = stubs.segments.UpdateSegment(
        S.UpdateSegmentRequest(
            segment=S.Segment(id=created.id, name="whole", match=ANY, rules=[rule("tags", "contains", "x")])
        ),
        metadata=tenant.auth,
    )
    assert (whole.name, whole.match, whole.description, list(whole.rules)) == (
        "whole",
        ANY,
        "",
        [rule("tags", "contains", "x")],
    )
    bad_rules = rpc_error(
        lambda: stubs.segments.UpdateSegment(
            S.UpdateSegmentRequest(
                segment=S.Segment(id=created.id, rules=[rule("tags", "contains", "x"), rule("tags", "gt", [1])]),
                update_mask=field_mask_pb2.FieldMask(paths=["rules"]),
            ),
            metadata=tenant.auth,
        )
    )
    assert set(field_violations(bad_rules)) == {"rules[1].value"}
    other = _create(stubs, tenant, name="taken")
    clash = rpc_error(
        lambda: stubs.segments.UpdateSegment(
            S.UpdateSegmentRequest(
                segment=S.Segment(id=other.id, name="whole"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=tenant.auth,
        )
    )
    assert clash.code() == grpc.StatusCode.ALREADY_EXISTS


def test_delete_checks_the_etag(stubs: Stubs, tenant: Tenant) -> None:
    created = _create(stubs, tenant, name="temp")
    stale = rpc_error(
        lambda: stubs.segments.DeleteSegment(S.DeleteSegmentRequest(id=created.id, etag='"999"'), metadata=tenant.auth)
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    stubs.segments.DeleteSegment(S.DeleteSegmentRequest(id=created.id, etag=created.etag), metadata=tenant.auth)
    gone = rpc_error(lambda: stubs.segments.GetSegment(S.GetSegmentRequest(id=created.id), metadata=tenant.auth))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_a_journey_audience_cannot_be_deleted(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    segment = _create(stubs, tenant, name="audience")
    flow_id = await seed_flow(sessions, tenant.id)
    stubs.journeys.CreateJourney(
        journey_pb2.CreateJourneyRequest(
            journey=journey_pb2.Journey(name="j", flow_id=str(flow_id), audience_segment_id=segment.id)
        ),
        metadata=tenant.auth,
    )
    error = rpc_error(lambda: stubs.segments.DeleteSegment(S.DeleteSegmentRequest(id=segment.id), metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "SEGMENT_IN_USE"


def test_request_id_replays_create_update_and_delete(stubs: Stubs, tenant: Tenant) -> None:
    first = _create(stubs, tenant, name="once", request_id="create-1")
    assert _create(stubs, tenant, name="once", request_id="create-1") == first
    listed = stubs.segments.ListSegments(S.ListSegmentsRequest(), metadata=tenant.auth)
    assert [s.name for s in listed.segments] == ["once"]
    update = S.UpdateSegmentRequest(
        segment=S.Segment(id=first.id, description="v2"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        request_id="update-1",
    )
    updated = stubs.segments.UpdateSegment(update, metadata=tenant.auth)
    assert stubs.segments.UpdateSegment(update, metadata=tenant.auth) == updated
    stored = stubs.segments.GetSegment(S.GetSegmentRequest(id=first.id), metadata=tenant.auth)
    assert stored.etag == updated.etag  # the replay wrote nothing
    delete = S.DeleteSegmentRequest(id=first.id, request_id="delete-1")
    stubs.segments.DeleteSegment(delete, metadata=tenant.auth)
    stubs.segments.DeleteSegment(delete, metadata=tenant.auth)
    reused = rpc_error(lambda: _create(stubs, tenant, name="different", request_id="create-1"))
    assert set(field_violations(reused)) == {"request_id"}
