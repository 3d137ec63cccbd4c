"""Page sizes and opaque page tokens."""

from __future__ import annotations

import contextlib

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
