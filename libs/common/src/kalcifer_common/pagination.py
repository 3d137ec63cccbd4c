"""AIP-158 pagination: `page_size` (0 = default, negative = invalid, capped) and opaque `page_token`s.

A token is the keyset position after the last row served, plus a fingerprint of the query's filters, so a token
cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from kalcifer_common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Keyset position: the sort key and id of the last row of the previous page."""

    sort_key: str
    last_id: str

    def time_and_id(self) -> tuple[datetime, uuid.UUID]:
        """The position in a list sorted by (time, id); INVALID_ARGUMENT for a token whose inside was forged
        (its fingerprint is no secret, so only its contents tell)."""
        try:
            moment = datetime.fromisoformat(self.sort_key)
            if moment.tzinfo is None:
                raise ValueError("a naive time")
            return moment.astimezone(UTC), uuid.UUID(self.last_id)
        except (ValueError, OverflowError):
            raise _forged() from None

    def number(self) -> int:
        """The position in a list sorted by a non-negative number; INVALID_ARGUMENT for a forged token."""
        if not (self.sort_key.isascii() and self.sort_key.isdigit()):
            raise _forged()
        return int(self.sort_key)


def _forged() -> InvalidArgument:
    return InvalidArgument.single("page_token", "is not a token this API issued")


def page_size_of(requested: int) -> int:
    """Normalise a request's `page_size`."""
    if requested < 0:
        raise InvalidArgument.single("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _fingerprint(query: object) -> str:
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode_page_token(cursor: PageCursor, *, query: object) -> str:
    """An opaque token for the page after `cursor`, bound to `query` (the request's filters)."""
    raw = orjson.dumps({"k": cursor.sort_key, "i": cursor.last_id, "q": _fingerprint(query)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, *, query: object) -> PageCursor | None:
    """The cursor inside `token` (None for the first page); INVALID_ARGUMENT if forged or from another query."""
    if not token:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = PageCursor(sort_key=str(data["k"]), last_id=str(data["i"]))
        fingerprint = data["q"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _forged() from None
    if fingerprint != _fingerprint(query):
        raise InvalidArgument.single("page_token", "belongs to a query with different filters")
    return cursor


def time_key(moment: datetime) -> str:
    """A sortable string form of a timestamp for cursors."""
    return moment.isoformat()
