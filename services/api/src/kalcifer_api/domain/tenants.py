"""Tenants and API keys: naming rules and key material."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from kalcifer_common.errors import FieldViolation, InvalidArgument

MAX_NAME_LENGTH = 200
RAW_KEY_PREFIX = "kal_"
KEY_PREFIX_LENGTH = 12


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant as the API shows it."""

    id: uuid.UUID
    name: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as the API shows it: never the raw key, never its hash."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    key_prefix: str
    create_time: datetime
    revoke_time: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly minted key: the raw form is shown once, then only the hash is kept."""

    raw_key: str
    key_prefix: str


def validated_name(value: str, field: str) -> str:
    """Trimmed, non-empty, bounded names."""
    name = value.strip()
    violations: list[FieldViolation] = []
    if not name:
        violations.append(FieldViolation(field, "must not be empty"))
    elif len(name) > MAX_NAME_LENGTH:
        violations.append(FieldViolation(field, f"must be at most {MAX_NAME_LENGTH} characters"))
    if violations:
        raise InvalidArgument(violations)
    return name


def mint_api_key() -> NewApiKey:
    """A new random key (256 bits of entropy) and the prefix that lets people recognise it."""
    raw = RAW_KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(raw_key=raw, key_prefix=raw[:KEY_PREFIX_LENGTH])
