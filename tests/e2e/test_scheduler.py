"""The scheduler as operators reach it: the real `grpcurl` against the suite's scheduler process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.support.grpcurl import grpcurl
from tests.support.processes import Suite

SERVICE = "kalcifer.scheduler.v1.SchedulerService"


def test_an_operator_arms_and_cancels_a_timer_with_grpcurl(suite: Suite) -> None:
    address, token = suite.address("scheduler"), suite.internal_token
    wait_id = str(uuid.uuid4())
    fire_time = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    request = {"instance_id": str(uuid.uuid4()), "wait_id": wait_id, "fire_time": fire_time}

    armed = grpcurl(address, f"{SERVICE}/ScheduleResume", data=request, token=token)
    again = grpcurl(address, f"{SERVICE}/ScheduleResume", data=request, token=token)
    cancelled = grpcurl(address, f"{SERVICE}/CancelResume", data={"wait_id": wait_id}, token=token)
    unknown = grpcurl(address, f"{SERVICE}/CancelResume", data={"wait_id": wait_id}, token=token)

    assert armed.returncode == 0, armed.stderr
    assert armed.json() == {"scheduled": True}
    assert again.json() == {}  # scheduled=false: arming the same wait twice is a no-op
    assert cancelled.json() == {"cancelled": True}
    assert unknown.json() == {}  # cancelling what is not armed is not an error


def test_grpcurl_sees_field_violations_and_needs_the_internal_token(suite: Suite) -> None:
    address = suite.address("scheduler")
    bad = grpcurl(
        address, f"{SERVICE}/ScheduleResumes", data={"resumes": [{"wait_id": "nope"}]}, token=suite.internal_token
    )
    stranger = grpcurl(address, f"{SERVICE}/CancelResume", data={"wait_id": str(uuid.uuid4())})

    assert bad.returncode != 0
    assert "InvalidArgument" in bad.stderr
    assert "resumes[0].wait_id" in bad.stderr
    assert "resumes[0].fire_time" in bad.stderr
    assert "Unauthenticated" in stranger.stderr
