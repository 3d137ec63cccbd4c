"""Struct <-> dict conversion keeps JSON values as they were sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.structs import dict_to_struct, nests_deeper_than, struct_to_dict

from tests.support.payloads import nested

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


def _depth(value: Any) -> int:
    """The nesting depth of a JSON value, by recursion (the reference the walk is checked against)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_nesting_counts_objects_and_arrays_alike() -> None:
    assert [nests_deeper_than(nested(3), levels) for levels in (1, 2, 3, 4)] == [True, True, False, False]
    assert [nests_deeper_than(nested(3, arrays=True), levels) for levels in (2, 3)] == [True, False]
    assert not nests_deeper_than("a string is no container", 0)
    assert nests_deeper_than({"wide": [1, 2, 3], "deep": nested(21)}, 21)
    assert not nests_deeper_than({"wide": [1, 2, 3], "deep": nested(21)}, 22)


@given(_json, st.integers(0, 8))
def test_nesting_agrees_with_the_recursive_depth(value: Any, levels: int) -> None:
    assert nests_deeper_than(value, levels) == (_depth(value) > levels)
