"""Resource ids on the wire are UUID strings; a malformed one is the caller's mistake, named by field."""

from __future__ import annotations

import uuid

from kalcifer_common.errors import InvalidArgument


def parse_id(value: str, field: str) -> uuid.UUID:
    """Parse a required UUID field, or raise INVALID_ARGUMENT naming it."""
    if not value:
        raise InvalidArgument.single(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.single(field, f"{value!r} is not a valid id (expected a UUID)") from None
