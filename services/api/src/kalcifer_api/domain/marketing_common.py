"""Rules the marketing-layer resources (customers, segments, journeys) share: IANA timezones, etags from a
`revision` counter (AIP-154) and `update_mask` paths (AIP-134)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kalcifer_common.errors import EtagMismatch, FieldViolation, InvalidArgument


@lru_cache(maxsize=1024)
def timezone_problem(name: str) -> str | None:
    """Why `name` is not an IANA timezone (e.g. "Europe/Paris"), or None when it is one."""
    # ZoneInfo also opens paths relative to the zone directory; a zone name is never absolute, dotted or padded.
    if not name or name.startswith("/") or ".." in name or name != name.strip():
        return f"{name!r} is not an IANA timezone (e.g. 'Europe/Paris')"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"{name!r} is not an IANA timezone (e.g. 'Europe/Paris')"
    return None


def etag_of(revision: int) -> str:
    """The opaque etag clients echo back; quoted like an HTTP strong etag, so nobody mistakes it for a number."""
    return f'"{revision}"'


def check_etag(given: str, revision: int, *, resource_type: str, resource_name: str) -> None:
    """ABORTED when the caller sent an etag that no longer matches; an empty etag means "whatever is stored"."""
    if given and given != etag_of(revision):
        raise EtagMismatch(resource_type, resource_name)


def masked_fields(paths: Sequence[str], mutable: Iterable[str], *, field: str = "update_mask") -> frozenset[str]:
    """The fields an update replaces: the mask's paths, or every mutable field when the mask is empty.
    A path that is not a mutable field is INVALID_ARGUMENT naming it (`update_mask.paths[1]`)."""
    allowed = tuple(mutable)
    if not paths:
        return frozenset(allowed)
    violations = [
        FieldViolation(f"{field}.paths[{index}]", f"{path!r} is not an updatable field (one of {', '.join(allowed)})")
        for index, path in enumerate(paths)
        if path not in allowed
    ]
    if violations:
        raise InvalidArgument(violations)
    return frozenset(paths)


def non_finite_path(value: Any, path: str) -> str | None:
    """The path of the first NaN or infinite number inside a JSON value, or None.

    `google.protobuf.Value` carries doubles, so NaN and infinities arrive on the wire, but JSON (and PostgreSQL's
    jsonb) has no spelling for them: they are refused up front instead of failing at storage time.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            if found := non_finite_path(item, f"{path}.{key}"):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := non_finite_path(item, f"{path}[{index}]"):
                return found
    return None
