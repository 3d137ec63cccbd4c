"""JourneyService on the real API process: settings validation (one case per rule), CRUD with etags and masks,
lifecycle driving the wrapped flow in one transaction, the full status x transition matrix, request_id replay."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest
from google.protobuf import field_mask_pb2
from kalcifer.v1 import common_pb2, journey_pb2, segment_pb2
from kalcifer_common.db.models import Flow, FlowVersion
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.marketing import BROKEN_GRAPH, Stubs, flow_status, seed_flow
from tests.support.processes import Suite
from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

J = journey_pb2
_S = J.JourneyStatus


def _segment(stubs: Stubs, tenant: Tenant) -> str:
    rule = segment_pb2.SegmentRule(field="attributes.tier", operator="eq")
    rule.value.string_value = "gold"
    segment = stubs.segments.CreateSegment(
        segment_pb2.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                name=f"audience-{uuid.uuid4().hex[:8]}", match=segment_pb2.SEGMENT_MATCH_ALL, rules=[rule]
            )
        ),
        metadata=tenant.auth,
    )
    return str(segment.id)


def _full_journey(flow_id: uuid.UUID, segment_id: str) -> J.Journey:
    return J.Journey(
        name="Welcome series",
        description="onboarding",
        flow_id=str(flow_id),
        audience_segment_id=segment_id,
        entry_schedule=J.EntrySchedule(cron="0 9 * * MON-FRI", timezone="Europe/Paris"),
        goals=[
            J.Goal(name="first_order", event_type="order.placed", filter="event.total > 10"),
            J.Goal(name="signup", event_type="signup"),
        ],
        exit_criteria=[J.ExitCriterion(event_type="unsubscribed"), J.ExitCriterion(event_type="x", filter="true")],
        frequency_cap=J.FrequencyCap(max_messages=3, time_window="1d", channel="email"),
        quiet_hours=J.QuietHours(start="22:00", end="08:00", timezone="America/New_York"),
        re_entry=common_pb2.RE_ENTRY_POLICY_NEVER,
    )


def _create(stubs: Stubs, tenant: Tenant, journey: J.Journey, request_id: str = "") -> J.Journey:
    created: J.Journey = stubs.journeys.CreateJourney(
        J.CreateJourneyRequest(journey=journey, request_id=request_id), metadata=tenant.auth
    )
    return created


async def _draft(stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession], **flow: Any) -> J.Journey:
    flow_id = await seed_flow(sessions, tenant.id, **flow)
    return _create(stubs, tenant, J.Journey(name="j", flow_id=str(flow_id)))


async def test_create_stores_every_setting_and_get_returns_it(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await seed_flow(sessions, tenant.id)
    journey = _full_journey(flow_id, _segment(stubs, tenant))
    created = _create(stubs, tenant, journey)
    assert uuid.UUID(created.id)
    assert created.status == _S.JOURNEY_STATUS_DRAFT
    assert created.etag
    got = stubs.journeys.GetJourney(J.GetJourneyRequest(id=created.id), metadata=tenant.auth)
    assert got == created
    for output_only in ("id", "status", "etag", "create_time", "update_time"):
        got.ClearField(output_only)
    assert got == journey  # every input field round-trips


async def test_defaults_apply_to_a_minimal_journey(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await _draft(stubs, tenant, sessions)
    assert created.re_entry == common_pb2.RE_ENTRY_POLICY_AFTER_EXIT
    assert not created.HasField("entry_schedule")
    assert not created.HasField("frequency_cap")
    assert not created.HasField("quiet_hours")
    assert created.audience_segment_id == ""


def _spoil_all(journey: J.Journey) -> None:
    journey.ClearField("name")
    journey.frequency_cap.max_messages = 0
    journey.quiet_hours.start = "x"
    journey.entry_schedule.cron = "bad"


# One case per validation rule: (what to change on a valid journey, the violations expected).
_INVALID: list[tuple[str, Callable[[J.Journey], None], set[str]]] = [
    ("no name", lambda j: j.ClearField("name"), {"name"}),
    ("long name", lambda j: setattr(j, "name", "n" * 201), {"name"}),
    ("no flow", lambda j: j.ClearField("flow_id"), {"flow_id"}),
    ("malformed flow", lambda j: setattr(j, "flow_id", "flow-1"), {"flow_id"}),
    ("malformed segment", lambda j: setattr(j, "audience_segment_id", "seg"), {"audience_segment_id"}),
    ("no cron", lambda j: setattr(j.entry_schedule, "cron", ""), {"entry_schedule.cron"}),
    ("4-field cron", lambda j: setattr(j.entry_schedule, "cron", "0 9 * *"), {"entry_schedule.cron"}),
    ("minute 60", lambda j: setattr(j.entry_schedule, "cron", "60 9 * * *"), {"entry_schedule.cron"}),
    ("zero step", lambda j: setattr(j.entry_schedule, "cron", "*/0 * * * *"), {"entry_schedule.cron"}),
    ("backwards range", lambda j: setattr(j.entry_schedule, "cron", "0 9 * * 5-1"), {"entry_schedule.cron"}),
    ("bad month name", lambda j: setattr(j.entry_schedule, "cron", "0 9 1 FOO *"), {"entry_schedule.cron"}),
    ("schedule timezone", lambda j: setattr(j.entry_schedule, "timezone", "Paris"), {"entry_schedule.timezone"}),
    ("goal without name", lambda j: setattr(j.goals[1], "name", ""), {"goals[1].name"}),
    ("duplicate goal", lambda j: setattr(j.goals[1], "name", "first_order"), {"goals[1].name"}),
    ("goal without event", lambda j: setattr(j.goals[0], "event_type", ""), {"goals[0].event_type"}),
    ("goal event with space", lambda j: setattr(j.goals[0], "event_type", "order placed"), {"goals[0].event_type"}),
    ("goal filter", lambda j: setattr(j.goals[0], "filter", "event.total >"), {"goals[0].filter"}),
    ("exit without event", lambda j: setattr(j.exit_criteria[0], "event_type", ""), {"exit_criteria[0].event_type"}),
    ("exit filter", lambda j: setattr(j.exit_criteria[1], "filter", "(("), {"exit_criteria[1].filter"}),
    ("cap of zero", lambda j: setattr(j.frequency_cap, "max_messages", 0), {"frequency_cap.max_messages"}),
    ("negative cap", lambda j: setattr(j.frequency_cap, "max_messages", -2), {"frequency_cap.max_messages"}),
    ("no window", lambda j: setattr(j.frequency_cap, "time_window", ""), {"frequency_cap.time_window"}),
    ("window no unit", lambda j: setattr(j.frequency_cap, "time_window", "30"), {"frequency_cap.time_window"}),
    ("window of zero", lambda j: setattr(j.frequency_cap, "time_window", "0s"), {"frequency_cap.time_window"}),
    ("cap channel", lambda j: setattr(j.frequency_cap, "channel", "pigeon"), {"frequency_cap.channel"}),
    ("quiet start", lambda j: setattr(j.quiet_hours, "start", "25:00"), {"quiet_hours.start"}),
    ("quiet end missing", lambda j: setattr(j.quiet_hours, "end", ""), {"quiet_hours.end"}),
    ("quiet end format", lambda j: setattr(j.quiet_hours, "end", "8:00"), {"quiet_hours.end"}),
    ("empty quiet window", lambda j: setattr(j.quiet_hours, "end", "22:00"), {"quiet_hours.end"}),
    ("quiet timezone", lambda j: setattr(j.quiet_hours, "timezone", "Mars/Base"), {"quiet_hours.timezone"}),
    ("re-entry", lambda j: setattr(j, "re_entry", 42), {"re_entry"}),
    (
        "everything at once",
        lambda j: _spoil_all(j),
        {"name", "frequency_cap.max_messages", "quiet_hours.start", "entry_schedule.cron"},
    ),
]


@pytest.mark.parametrize(("case", "spoil", "violations"), _INVALID, ids=[case for case, _, _ in _INVALID])
async def test_create_rejects_each_bad_setting(
    stubs: Stubs,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    case: str,
    spoil: Callable[[J.Journey], None],
    violations: set[str],
) -> None:
    journey = _full_journey(uuid.uuid4(), str(uuid.uuid4()))
    spoil(journey)
    error = rpc_error(lambda: _create(stubs, tenant, journey))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert set(field_violations(error)) == violations


async def test_create_needs_the_tenants_flow_and_segment(
    suite: Suite, stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await seed_flow(sessions, tenant.id)
    missing_flow = rpc_error(lambda: _create(stubs, tenant, J.Journey(name="j", flow_id=str(uuid.uuid4()))))
    assert missing_flow.code() == grpc.StatusCode.NOT_FOUND
    missing_segment = rpc_error(
        lambda: _create(stubs, tenant, J.Journey(name="j", flow_id=str(flow_id), audience_segment_id=str(uuid.uuid4())))
    )
    assert missing_segment.code() == grpc.StatusCode.NOT_FOUND
    other = new_tenant(suite, "journeys-other")
    foreign_flow = rpc_error(lambda: _create(stubs, other, J.Journey(name="j", flow_id=str(flow_id))))
    assert foreign_flow.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_newest_first_and_filters_by_status(
    suite: Suite, stubs: Stubs, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = new_tenant(suite, "journeys-list")
    ids = [(await _draft(stubs, tenant, sessions)).id for _ in range(5)]
    stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=ids[1]), metadata=tenant.auth)
    seen: list[str] = []
    token = ""
    while True:
        page = stubs.journeys.ListJourneys(J.ListJourneysRequest(page_size=2, page_token=token), metadata=tenant.auth)
        seen += [j.id for j in page.journeys]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    active = stubs.journeys.ListJourneys(J.ListJourneysRequest(status=_S.JOURNEY_STATUS_ACTIVE), metadata=tenant.auth)
    assert [j.id for j in active.journeys] == [ids[1]]
    drafts = stubs.journeys.ListJourneys(
        J.ListJourneysRequest(status=_S.JOURNEY_STATUS_DRAFT, page_size=3), metadata=tenant.auth
    )
    assert [j.id for j in drafts.journeys] == [ids[4], ids[3], ids[2]]
    for request, field in [
        (J.ListJourneysRequest(page_size=-1), "page_size"),
        (J.ListJourneysRequest(status=cast(Any, 17)), "status"),
        (J.ListJourneysRequest(page_token=drafts.next_page_token), "page_token"),  # issued for another filter
    ]:
        error = rpc_error(functools.partial(stubs.journeys.ListJourneys, request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {field}


async def test_update_follows_the_mask_and_the_etag(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await seed_flow(sessions, tenant.id)
    created = _create(stubs, tenant, _full_journey(flow_id, _segment(stubs, tenant)))
    mask = field_mask_pb2.FieldMask(paths=["name", "quiet_hours"])
    updated = stubs.journeys.UpdateJourney(
        J.UpdateJourneyRequest(
            journey=J.Journey(
                id=created.id,
                name="Renamed",
                description="ignored: not in the mask",
                quiet_hours=J.QuietHours(start="21:30", end="07:00"),
                frequency_cap=J.FrequencyCap(max_messages=0),  # invalid, but not in the mask
                etag=created.etag,
            ),
            update_mask=mask,
        ),
        metadata=tenant.auth,
    )
    assert (updated.name, updated.description) == ("Renamed", "onboarding")
    assert updated.quiet_hours == J.QuietHours(start="21:30", end="07:00")
    assert updated.frequency_cap == created.frequency_cap
    assert updated.etag != created.etag
    stale = rpc_error(
        lambda: stubs.journeys.UpdateJourney(
            J.UpdateJourneyRequest(journey=J.Journey(id=created.id, name="x", etag=created.etag), update_mask=mask),
            metadata=tenant.auth,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    for request, fields in [
        (
            J.UpdateJourneyRequest(
                journey=J.Journey(id=created.id), update_mask=field_mask_pb2.FieldMask(paths=["name", "status"])
            ),
            {"update_mask.paths[1]"},
        ),
        (
            J.UpdateJourneyRequest(
                journey=J.Journey(id=created.id, quiet_hours=J.QuietHours(start="1", end="2")),
                update_mask=field_mask_pb2.FieldMask(paths=["quiet_hours"]),
            ),
            {"quiet_hours.start", "quiet_hours.end"},
        ),
        (J.UpdateJourneyRequest(journey=J.Journey(id="x", name="y")), {"journey.id"}),
    ]:
        error = rpc_error(functools.partial(stubs.journeys.UpdateJourney, request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == fields
    cleared = stubs.journeys.UpdateJourney(
        J.UpdateJourneyRequest(
            journey=J.Journey(id=created.id),
            update_mask=field_mask_pb2.FieldMask(paths=["audience_segment_id", "entry_schedule", "goals"]),
        ),
        metadata=tenant.auth,
    )
    assert (cleared.audience_segment_id, cleared.HasField("entry_schedule"), list(cleared.goals)) == ("", False, [])
    other_flow = await seed_flow(sessions, tenant.id)
    moved = stubs.journeys.UpdateJourney(
        J.UpdateJourneyRequest(
            journey=J.Journey(id=created.id, flow_id=str(other_flow)),
            update_mask=field_mask_pb2.FieldMask(paths=["flow_id"]),
        ),
        metadata=tenant.auth,
    )
    assert moved.flow_id == str(other_flow)
    for journey, path in [
        (J.Journey(id=created.id, flow_id=str(uuid.uuid4())), "flow_id"),
        (J.Journey(id=str(uuid.uuid4()), name="x"), "name"),
    ]:
        missing = rpc_error(
            functools.partial(
                stubs.journeys.UpdateJourney,
                J.UpdateJourneyRequest(journey=journey, update_mask=field_mask_pb2.FieldMask(paths=[path])),
                metadata=tenant.auth,
            )
        )
        assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_removes_a_draft_and_keeps_its_flow(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await _draft(stubs, tenant, sessions)
    stale = rpc_error(
        lambda: stubs.journeys.DeleteJourney(J.DeleteJourneyRequest(id=created.id, etag='"0"'), metadata=tenant.auth)
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    stubs.journeys.DeleteJourney(J.DeleteJourneyRequest(id=created.id, etag=created.etag), metadata=tenant.auth)
    gone = rpc_error(lambda: stubs.journeys.GetJourney(J.GetJourneyRequest(id=created.id), metadata=tenant.auth))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert await flow_status(sessions, uuid.UUID(created.flow_id)) == "draft"
    malformed = rpc_error(lambda: stubs.journeys.DeleteJourney(J.DeleteJourneyRequest(id="1"), metadata=tenant.auth))
    assert set(field_violations(malformed)) == {"id"}


async def test_launch_activates_the_flow_with_the_journeys_re_entry(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await seed_flow(sessions, tenant.id)
    created = _create(
        stubs, tenant, J.Journey(name="j", flow_id=str(flow_id), re_entry=common_pb2.RE_ENTRY_POLICY_ALWAYS)
    )
    launched = stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=created.id), metadata=tenant.auth)
    assert launched.status == _S.JOURNEY_STATUS_ACTIVE
    async with sessions() as session:
        flow = await session.get(Flow, flow_id)
        assert flow is not None
        assert (flow.status, flow.active_version_number, flow.re_entry) == ("active", 1, "always")
        version = await session.scalar(select(FlowVersion).where(FlowVersion.flow_id == flow_id))
        assert version is not None
        assert version.status == "active"
    paused = stubs.journeys.PauseJourney(J.PauseJourneyRequest(id=created.id), metadata=tenant.auth)
    assert (paused.status, await flow_status(sessions, flow_id)) == (_S.JOURNEY_STATUS_PAUSED, "paused")
    resumed = stubs.journeys.ResumeJourney(J.ResumeJourneyRequest(id=created.id), metadata=tenant.auth)
    assert (resumed.status, await flow_status(sessions, flow_id)) == (_S.JOURNEY_STATUS_ACTIVE, "active")
    archived = stubs.journeys.ArchiveJourney(J.ArchiveJourneyRequest(id=created.id), metadata=tenant.auth)
    assert (archived.status, await flow_status(sessions, flow_id)) == (_S.JOURNEY_STATUS_ARCHIVED, "archived")


async def test_launch_on_an_already_active_flow_keeps_it_active(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await _draft(stubs, tenant, sessions, status="active")
    launched = stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=created.id), metadata=tenant.auth)
    assert launched.status == _S.JOURNEY_STATUS_ACTIVE
    assert await flow_status(sessions, uuid.UUID(created.flow_id)) == "active"


@pytest.mark.parametrize(
    ("flow", "code", "reason"),
    [
        ({"with_draft_version": False}, grpc.StatusCode.FAILED_PRECONDITION, "NO_DRAFT_VERSION"),
        ({"status": "paused"}, grpc.StatusCode.FAILED_PRECONDITION, "FLOW_NOT_ACTIVE"),
        ({"status": "archived"}, grpc.StatusCode.FAILED_PRECONDITION, "FLOW_NOT_ACTIVE"),
        ({"graph": BROKEN_GRAPH}, grpc.StatusCode.INVALID_ARGUMENT, None),
    ],
)
async def test_a_failed_launch_changes_neither_journey_nor_flow(
    stubs: Stubs,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    flow: dict[str, Any],
    code: grpc.StatusCode,
    reason: str | None,
) -> None:
    created = await _draft(stubs, tenant, sessions, **flow)
    before = await flow_status(sessions, uuid.UUID(created.flow_id))
    error = rpc_error(lambda: stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=created.id), metadata=tenant.auth))
    assert error.code() == code
    if reason is None:
        assert any(field.startswith("nodes[") or field.startswith("edges[") for field in field_violations(error))
    else:
        assert reason_of(error) == reason
    got = stubs.journeys.GetJourney(J.GetJourneyRequest(id=created.id), metadata=tenant.auth)
    assert (got.status, got.etag) == (_S.JOURNEY_STATUS_DRAFT, created.etag)
    assert await flow_status(sessions, uuid.UUID(created.flow_id)) == before


async def test_resuming_a_journey_whose_flow_was_archived_is_refused(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await _draft(stubs, tenant, sessions)
    stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=created.id), metadata=tenant.auth)
    stubs.journeys.PauseJourney(J.PauseJourneyRequest(id=created.id), metadata=tenant.auth)
    async with sessions.begin() as session:
        flow = await session.get(Flow, uuid.UUID(created.flow_id))
        assert flow is not None
        flow.status = "archived"
    error = rpc_error(lambda: stubs.journeys.ResumeJourney(J.ResumeJourneyRequest(id=created.id), metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "FLOW_NOT_ACTIVE"


# --- the lifecycle matrix ---------------------------------------------------------------------------------------

_OK = grpc.StatusCode.OK
_FP = grpc.StatusCode.FAILED_PRECONDITION
_PATHS = {
    "draft": [],
    "active": ["launch"],
    "paused": ["launch", "pause"],
    "archived": ["launch", "archive"],
}
_EXPECTED: dict[str, dict[str, tuple[grpc.StatusCode, str | None]]] = {
    "draft": {
        "launch": (_OK, None),
        "pause": (_FP, "INVALID_TRANSITION"),
        "resume": (_FP, "INVALID_TRANSITION"),
        "archive": (_FP, "INVALID_TRANSITION"),
        "update": (_OK, None),
        "delete": (_OK, None),
    },
    "active": {
        "launch": (_FP, "JOURNEY_NOT_DRAFT"),
        "pause": (_OK, None),
        "resume": (_FP, "INVALID_TRANSITION"),
        "archive": (_OK, None),
        "update": (_FP, "JOURNEY_NOT_DRAFT"),
        "delete": (_FP, "JOURNEY_NOT_DRAFT"),
    },
    "paused": {
        "launch": (_FP, "JOURNEY_NOT_DRAFT"),
        "pause": (_FP, "INVALID_TRANSITION"),
        "resume": (_OK, None),
        "archive": (_OK, None),
        "update": (_FP, "JOURNEY_NOT_DRAFT"),
        "delete": (_FP, "JOURNEY_NOT_DRAFT"),
    },
    "archived": {
        "launch": (_FP, "JOURNEY_NOT_DRAFT"),
        "pause": (_FP, "INVALID_TRANSITION"),
        "resume": (_FP, "INVALID_TRANSITION"),
        "archive": (_FP, "INVALID_TRANSITION"),
        "update": (_FP, "JOURNEY_NOT_DRAFT"),
        "delete": (_FP, "JOURNEY_NOT_DRAFT"),
    },
}
# The status journey and flow have after a successful move.
_AFTER = {"launch": "active", "pause": "paused", "resume": "active", "archive": "archived"}


def _call(stubs: Stubs, tenant: Tenant, rpc: str, journey_id: str) -> Any:
    auth = tenant.auth
    calls: dict[str, Callable[[], Any]] = {
        "launch": lambda: stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=journey_id), metadata=auth),
        "pause": lambda: stubs.journeys.PauseJourney(J.PauseJourneyRequest(id=journey_id), metadata=auth),
        "resume": lambda: stubs.journeys.ResumeJourney(J.ResumeJourneyRequest(id=journey_id), metadata=auth),
        "archive": lambda: stubs.journeys.ArchiveJourney(J.ArchiveJourneyRequest(id=journey_id), metadata=auth),
        "update": lambda: stubs.journeys.UpdateJourney(
            J.UpdateJourneyRequest(
                journey=J.Journey(id=journey_id, name="edited"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=auth,
        ),
        "delete": lambda: stubs.journeys.DeleteJourney(J.DeleteJourneyRequest(id=journey_id), metadata=auth),
    }
    return calls[rpc]()


@pytest.mark.parametrize("status", list(_EXPECTED))
@pytest.mark.parametrize("rpc", ["launch", "pause", "resume", "archive", "update", "delete"])
async def test_lifecycle_matrix(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession], status: str, rpc: str
) -> None:
    journey = await _draft(stubs, tenant, sessions)
    for step in _PATHS[status]:
        _call(stubs, tenant, step, journey.id)
    flow_before = await flow_status(sessions, uuid.UUID(journey.flow_id))
    code, reason = _EXPECTED[status][rpc]
    if code == _OK:
        _call(stubs, tenant, rpc, journey.id)
    else:
        error = rpc_error(lambda: _call(stubs, tenant, rpc, journey.id))
        assert error.code() == code, (status, rpc)
        assert reason_of(error) == reason
    outcome = code
    flow_after = await flow_status(sessions, uuid.UUID(journey.flow_id))
    if outcome == _OK and rpc in _AFTER:
        got = stubs.journeys.GetJourney(J.GetJourneyRequest(id=journey.id), metadata=tenant.auth)
        assert _S.Name(got.status) == f"JOURNEY_STATUS_{_AFTER[rpc].upper()}"
        assert flow_after == _AFTER[rpc]
    else:
        assert flow_after == flow_before


async def test_request_id_replays_lifecycle_and_create(
    stubs: Stubs, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await seed_flow(sessions, tenant.id)
    request = J.Journey(name="idempotent", flow_id=str(flow_id))
    first = _create(stubs, tenant, request, request_id="create-j")
    assert _create(stubs, tenant, request, request_id="create-j") == first
    launch = J.LaunchJourneyRequest(id=first.id, request_id="launch-j")
    launched = stubs.journeys.LaunchJourney(launch, metadata=tenant.auth)
    stubs.journeys.PauseJourney(J.PauseJourneyRequest(id=first.id), metadata=tenant.auth)
    replayed = stubs.journeys.LaunchJourney(launch, metadata=tenant.auth)
    assert replayed == launched
    got = stubs.journeys.GetJourney(J.GetJourneyRequest(id=first.id), metadata=tenant.auth)
    assert got.status == _S.JOURNEY_STATUS_PAUSED
    assert await flow_status(sessions, flow_id) == "paused"
    reused = rpc_error(
        lambda: stubs.journeys.PauseJourney(
            J.PauseJourneyRequest(id=first.id, request_id="launch-j"), metadata=tenant.auth
        )
    )
    assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION  # another method: its own key space
    mismatch = rpc_error(
        lambda: _create(stubs, tenant, J.Journey(name="other", flow_id=str(flow_id)), request_id="create-j")
    )
    assert set(field_violations(mismatch)) == {"request_id"}
