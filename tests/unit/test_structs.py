"""Struct <-> dict conversion keeps JSON values as they were sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.structs import dict_to_struct, struct_to_dict

_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def test_integral_numbers_come_back_as_ints() -> None:
    assert struct_to_dict(dict_to_struct({"n": 3, "f": 2.5, "nested": [{"k": 1}]})) == {
        "n": 3,
        "f": 2.5,
        "nested": [{"k": 1}],
    }
    assert isinstance(struct_to_dict(dict_to_struct({"n": 3}))["n"], int)


def test_none_gives_an_empty_struct() -> None:
    assert struct_to_dict(dict_to_struct(None)) == {}


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_round_trip_of_json_without_fractions(data: dict[str, Any]) -> None:
    assert struct_to_dict(dict_to_struct(data)) == data
