"""Customer profiles: what a valid profile looks like and how an upsert merges into an existing one.

Pure: validation raises `InvalidArgument` naming every bad field at once; merging works on plain values. Field
names in violations are relative to the `Customer` message (`email`, `preferences.fax`), except for fields of
the request itself (`external_id`, `tags[1]`, `channels.fax`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from kalcifer_common.errors import FieldViolation, InvalidArgument

from kalcifer_api.domain.marketing_common import non_finite_path, timezone_problem
from kalcifer_api.domain.payloads import nesting_violations

MAX_EXTERNAL_ID_LENGTH: Final = 255
MAX_TAG_LENGTH: Final = 100
MAX_TAGS: Final = 1000
MAX_ATTRIBUTES_BYTES: Final = 64 * 1024
MAX_EMAIL_LENGTH: Final = 254
# The channels a preference may name (SPEC 7); `webhook` is not a customer-facing channel.
PREFERENCE_CHANNELS: Final = ("email", "sms", "push", "whatsapp", "in_app")
# A sanity check, not RFC 5322: one @, no spaces, a dot in the domain. Delivery finds the rest.
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A stored customer profile."""

    external_id: str
    attributes: dict[str, Any]
    tags: list[str]
    preferences: dict[str, bool]
    timezone: str | None
    email: str | None
    phone: str | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class CustomerPatch:
    """A validated UpsertCustomer: what to create, or how to change an existing profile.

    `attributes` is merged key by key (a None value removes the key), `tags` are appended when new,
    `preferences` merged; `timezone`, `email` and `phone` replace the stored value only when not None.
    """

    external_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    preferences: dict[str, bool] = field(default_factory=dict)
    timezone: str | None = None
    email: str | None = None
    phone: str | None = None


def external_id_violations(value: str, path: str = "external_id") -> list[FieldViolation]:
    """Problems with an external id: required, 1 to 255 characters, no control characters."""
    if not value:
        return [FieldViolation(path, "is required")]
    if len(value) > MAX_EXTERNAL_ID_LENGTH:
        return [FieldViolation(path, f"must be at most {MAX_EXTERNAL_ID_LENGTH} characters")]
    if _CONTROL.search(value):
        return [FieldViolation(path, "must not contain control characters")]
    return []


def validated_external_id(value: str, path: str = "external_id") -> str:
    """The external id of a Get/Delete/Tags request, or INVALID_ARGUMENT."""
    violations = external_id_violations(value, path)
    if violations:
        raise InvalidArgument(violations)
    return value


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a tag (1 to 100 characters, no surrounding whitespace, no control characters), or None."""
    if not tag.strip():
        return "must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"must be at most {MAX_TAG_LENGTH} characters"
    if tag != tag.strip():
        return f"{tag!r} must not start or end with whitespace"
    if _CONTROL.search(tag):
        return "must not contain control characters"
    return None


def tag_violations(tags: Iterable[str], path: str = "tags") -> list[FieldViolation]:
    """Every bad tag of a list, named by index (`tags[1]`)."""
    listed = list(tags)
    if len(listed) > MAX_TAGS:
        return [FieldViolation(path, f"must hold at most {MAX_TAGS} tags")]
    return [
        FieldViolation(f"{path}[{index}]", problem)
        for index, tag in enumerate(listed)
        if (problem := tag_problem(tag)) is not None
    ]


def validated_tags(tags: Iterable[str], path: str = "tags", *, required: bool = True) -> list[str]:
    """Tags of an Add/Remove request, deduplicated in order, or INVALID_ARGUMENT."""
    listed = list(tags)
    if required and not listed:
        raise InvalidArgument.single(path, "must name at least one tag")
    violations = tag_violations(listed, path)
    if violations:
        raise InvalidArgument(violations)
    return list(dict.fromkeys(listed))


def channel_violations(channels: Iterable[str], path: str) -> list[FieldViolation]:
    """Preference keys must be customer-facing channels."""
    allowed = ", ".join(PREFERENCE_CHANNELS)
    return [
        FieldViolation(f"{path}.{channel}", f"{channel!r} is not a channel (expected one of {allowed})")
        for channel in channels
        if channel not in PREFERENCE_CHANNELS
    ]


def validated_channels(channels: Mapping[str, bool], path: str = "channels") -> dict[str, bool]:
    """The channels of SetCustomerPreferences: at least one, each a known channel."""
    if not channels:
        raise InvalidArgument.single(path, "must name at least one channel")
    violations = channel_violations(channels, path)
    if violations:
        raise InvalidArgument(violations)
    return dict(channels)


def email_problem(value: str) -> str | None:
    """Why `value` is not an email address we would send to, or None."""
    if len(value) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    if not _EMAIL.fullmatch(value):
        return f"{value!r} is not an email address"
    return None


def phone_problem(value: str) -> str | None:
    """Why `value` is not an E.164 phone number, or None."""
    if not _E164.fullmatch(value):
        return f"{value!r} is not a phone number in E.164 form (e.g. '+33612345678')"
    return None


def validated_patch(
    *,
    external_id: str,
    attributes: dict[str, Any],
    tags: list[str],
    preferences: Mapping[str, bool],
    timezone: str,
    email: str,
    phone: str,
) -> CustomerPatch:
    """Check every field of an UpsertCustomer at once; empty strings mean "leave as is"."""
    violations = external_id_violations(external_id)
    if len(orjson.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
        violations.append(FieldViolation("attributes", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"))
    violations += nesting_violations(attributes, "attributes")
    if bad_number := non_finite_path(attributes, "attributes"):
        violations.append(FieldViolation(bad_number, "must be a finite number (JSON has no NaN or infinity)"))
    violations += tag_violations(tags)
    violations += channel_violations(preferences, "preferences")
    for path, value, problem_of in (
        ("timezone", timezone, timezone_problem),
        ("email", email, email_problem),
        ("phone", phone, phone_problem),
    ):
        problem = problem_of(value) if value else None
        if problem:
            violations.append(FieldViolation(path, problem))
    if violations:
        raise InvalidArgument(violations)
    return CustomerPatch(
        external_id=external_id,
        attributes=attributes,
        tags=list(dict.fromkeys(tags)),
        preferences=dict(preferences),
        timezone=timezone or None,
        email=email or None,
        phone=phone or None,
    )


def with_tags(current: Iterable[str], added: Iterable[str]) -> list[str]:
    """`current` followed by the tags of `added` it did not have, in the order they came."""
    return list(dict.fromkeys([*current, *added]))


def without_tags(current: Iterable[str], removed: Iterable[str]) -> list[str]:
    """`current` minus `removed`, order kept."""
    dropped = set(removed)
    return [tag for tag in current if tag not in dropped]
