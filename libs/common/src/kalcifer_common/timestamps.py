"""Timestamps between `datetime` and `google.protobuf.Timestamp`, for every service's mappers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp

from kalcifer_common.errors import FieldViolation


@overload
def to_timestamp(moment: datetime) -> Timestamp: ...
@overload
def to_timestamp(moment: None) -> None: ...
@overload
def to_timestamp(moment: datetime | None) -> Timestamp | None: ...
def to_timestamp(moment: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of an aware `datetime`, or None to leave the field unset."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    """An aware UTC `datetime` of a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def timestamp_in_request(stamp: Timestamp, field: str, violations: list[FieldViolation]) -> datetime | None:
    """The `datetime` of a Timestamp a caller sent, or None with a violation on `field` when it names no time a
    datetime can hold (years 1 to 9999, nanos 0 to 999,999,999): bad input, never an INTERNAL."""
    try:
        return from_timestamp(stamp)
    except (ValueError, OverflowError):
        violations.append(FieldViolation(field, "is not a valid time (years 1 to 9999, nanos 0 to 999999999)"))
        return None
