"""Page sizes and opaque page tokens."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.errors import InvalidArgument
from kalcifer_common.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageCursor,
    decode_page_token,
    encode_page_token,
    page_size_of,
    time_key,
)


def test_page_size_defaults_caps_and_rejects_negatives() -> None:
    assert page_size_of(0) == DEFAULT_PAGE_SIZE
    assert page_size_of(7) == 7
    assert page_size_of(10**6) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as raised:
        page_size_of(-1)
    assert raised.value.violations[0].field == "page_size"


@given(st.text(max_size=40), st.text(max_size=40), st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_tokens_round_trip(sort_key: str, last_id: str, query: dict[str, str]) -> None:
    cursor = PageCursor(sort_key, last_id)
    assert decode_page_token(encode_page_token(cursor, query=query), query=query) == cursor


def test_a_token_cannot_be_replayed_on_another_query() -> None:
    token = encode_page_token(PageCursor("a", "b"), query={"status": "ACTIVE"})
    with pytest.raises(InvalidArgument, match="different filters"):
        decode_page_token(token, query={"status": "DRAFT"})


@given(st.text(min_size=1, max_size=60))
def test_garbage_tokens_are_invalid_arguments(token: str) -> None:
    with contextlib.suppress(InvalidArgument):
        decode_page_token(token, query={})
    # and when it does refuse, it names the field
    with pytest.raises(InvalidArgument) as raised:
        decode_page_token(token + "!", query={})
    assert raised.value.violations[0].field == "page_token"


def _forged(sort_key: str, last_id: str, query: dict[str, str]) -> PageCursor:
    """A cursor from a token forged with the right fingerprint (the fingerprint is no secret) and junk inside."""
    cursor = decode_page_token(encode_page_token(PageCursor(sort_key, last_id), query=query), query=query)
    assert cursor is not None
    return cursor


@pytest.mark.parametrize(
    ("sort_key", "last_id"),
    [
        ("\ufdd0", "844f746b-2008-4963-8dee-edf28cfd9e2f"),  # found by the fuzzer on ListTenants
        ("2026-11-30T00:04:30.130561+00:00", "70959201501909"),  # found by the fuzzer on ListFlows
        ("2026-11-30T00:04:30", "844f746b-2008-4963-8dee-edf28cfd9e2f"),  # no time zone
        ("9999-12-31T23:59:59-14:00", "844f746b-2008-4963-8dee-edf28cfd9e2f"),  # past year 9999 in UTC
    ],
)
def test_a_forged_time_cursor_is_invalid_argument(sort_key: str, last_id: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _forged(sort_key, last_id, {"list": "flows"}).time_and_id()
    assert raised.value.violations[0].field == "page_token"


@pytest.mark.parametrize("sort_key", ["", "-1", "1.5", "\u00b2", "\u0663", "x"])
def test_a_forged_number_cursor_is_invalid_argument(sort_key: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _forged(sort_key, "", {}).number()
    assert raised.value.violations[0].field == "page_token"


def test_issued_cursors_read_back() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    row_id = uuid.uuid4()
    assert _forged(time_key(moment), str(row_id), {}).time_and_id() == (moment, row_id)
    assert _forged("42", "", {}).number() == 42
