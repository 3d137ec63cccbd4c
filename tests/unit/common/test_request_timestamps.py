"""A Timestamp a caller sends that no datetime can hold is a field violation, never an INTERNAL (found by the
public-API fuzzer in ReportDeliveryStatus)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer_common.errors import FieldViolation
from kalcifer_common.timestamps import timestamp_in_request


@pytest.mark.parametrize(
    "stamp",
    [Timestamp(seconds=-62135596801), Timestamp(seconds=253402300800), Timestamp(seconds=0, nanos=1_000_000_000)],
    ids=["before year 1", "after year 9999", "nanos out of range"],
)
def test_a_time_no_datetime_can_hold_is_a_violation_of_its_field(stamp: Timestamp) -> None:
    violations: list[FieldViolation] = []
    assert timestamp_in_request(stamp, "occurred_at", violations) is None
    assert [v.field for v in violations] == ["occurred_at"]


def test_a_valid_time_is_read_as_utc() -> None:
    violations: list[FieldViolation] = []
    assert timestamp_in_request(Timestamp(seconds=86400), "at", violations) == datetime(1970, 1, 2, tzinfo=UTC)
    assert violations == []
