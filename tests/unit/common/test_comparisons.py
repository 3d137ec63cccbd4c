"""`kalcifer_common.comparisons`: the one path resolver and comparison of `condition` nodes and segment rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.comparisons import MISSING, OPERATORS, compare, json_equal, json_kind, lookup, resolve

DOC = {
    "customer": {"attributes": {"tier": "gold", "score": None, "0": "key zero"}, "tags": ["vip", "new"]},
    "items": [{"sku": "a"}, {"sku": "b", "tags": ["x"]}],
    "n": 3,
    "text": "hello",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("customer.attributes.tier", "gold"),
        ("customer.attributes.score", None),
        ("customer.attributes.0", "key zero"),
        ("items.0.sku", "a"),
        ("items.1.tags.0", "x"),
        ("customer.tags.1", "new"),
        ("items.1", {"sku": "b", "tags": ["x"]}),
        ("items.2.sku", MISSING),
        ("items.01.sku", MISSING),
        ("items.-1.sku", MISSING),
        ("items.+1.sku", MISSING),
        ("items.²", MISSING),
        ("items.sku", MISSING),
        ("customer.missing", MISSING),
        ("n.deeper", MISSING),
        ("text.0", MISSING),
        ("customer.attributes.score.x", MISSING),
        ("", MISSING),
        ("customer.", MISSING),
    ],
)
def test_resolve_follows_object_keys_and_canonical_list_indexes(path: str, expected: Any) -> None:
    if expected is MISSING:
        assert resolve(DOC, path) is MISSING
        assert lookup(DOC, path) == (False, None)
    else:
        assert resolve(DOC, path) == expected
        assert lookup(DOC, path) == (True, expected)


@pytest.mark.parametrize(
    ("operator", "actual", "operand", "expected"),
    [
        # eq / neq by JSON type
        ("eq", True, 1, False),
        ("eq", 1, True, False),
        ("eq", False, 0, False),
        ("neq", True, 1, True),
        ("eq", 1, 1.0, True),
        ("neq", 1, 1.0, False),
        ("eq", 1, "1", False),
        ("eq", None, None, True),
        ("eq", [1, True], [1.0, True], True),
        ("eq", [1], [True], False),
        ("eq", {"a": 1}, {"a": 1.0}, True),
        ("eq", {"a": 1}, {"a": True}, False),
        ("eq", {"a": 1}, {"a": 1, "b": 2}, False),
        # missing: fails positive tests, passes negative ones
        ("eq", MISSING, None, False),
        ("neq", MISSING, "gold", True),
        ("neq", MISSING, None, True),
        ("in", MISSING, [None], False),
        ("not_in", MISSING, ["x"], True),
        ("not_in", MISSING, "not a list", True),
        ("gt", MISSING, 0, False),
        ("contains", MISSING, "x", False),
        ("exists", MISSING, None, False),
        # exists: found and not null
        ("exists", None, None, False),
        ("exists", False, None, True),
        ("exists", 0, None, True),
        ("exists", "", None, True),
        # ordering: two numbers or two strings only
        ("gt", 2, 1.5, True),
        ("gte", 2, 2.0, True),
        ("lt", "2026-01-01", "2026-02-01", True),
        ("lte", "b", "b", True),
        ("gt", "10", 9, False),
        ("gt", True, False, False),
        ("gte", True, True, False),
        ("lt", 0, True, False),
        ("gt", [2], [1], False),
        ("lt", None, 1, False),
        ("gt", {"a": 1}, {"a": 0}, False),
        # contains
        ("contains", ["a", "b"], "b", True),
        ("contains", [1, 2], 2.0, True),
        ("contains", [True], 1, False),
        ("contains", [1], True, False),
        ("contains", [[1]], [1], True),
        ("contains", "hello", "ell", True),
        ("contains", "hello", 1, False),
        ("contains", "a1", 1, False),
        ("contains", {"city": "Lyon"}, "city", True),
        ("contains", {"city": "Lyon"}, "Lyon", False),
        ("contains", {"1": 2}, 1, False),
        ("contains", 123, 2, False),
        # in / not_in: the operand must be a list; a list value is in when any of its items is
        ("in", "gold", ["gold", "silver"], True),
        ("in", 1, [True], False),
        ("in", True, [1], False),
        ("in", 1, [1.0], True),
        ("in", ["vip", "new"], ["new"], True),
        ("in", ["vip", "new"], [["vip", "new"]], False),
        ("in", [], [[]], False),
        ("not_in", [], ["a"], True),
        ("in", "gold", "gold", False),
        ("not_in", "gold", "silver", False),
        ("not_in", ["vip"], ["vip", "x"], False),
        ("not_in", None, [None], False),
        ("in", None, [None], True),
        # unknown operators never hold
        ("like", "gold", "gold", False),
        ("", None, None, False),
    ],
)
def test_each_operator_means_what_the_module_says(operator: str, actual: Any, operand: Any, expected: bool) -> None:
    assert compare(operator, actual, operand) is expected


def test_json_kinds_keep_bool_apart_from_numbers() -> None:
    assert [json_kind(v) for v in (None, True, 1, 1.5, "1", [1], (1,), {"a": 1}, object())] == [
        "null",
        "bool",
        "number",
        "number",
        "string",
        "list",
        "list",
        "object",
        "other",
    ]
    assert not json_equal(object(), object())


# --- properties -----------------------------------------------------------------------------------------------

# Small pools so that the interesting collisions (True vs 1, 1 vs 1.0, 1 vs "1") happen often.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, 1.0, -1.5, 2.5])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="ab01", max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "0"]), children),
    max_leaves=8,
)
actuals = json_values | st.just(MISSING)


@given(st.sampled_from([*OPERATORS, "bogus"]), actuals, json_values)
def test_compare_never_raises_and_answers_a_bool(operator: str, actual: Any, operand: Any) -> None:
    assert compare(operator, actual, operand) in (True, False)


@given(actuals, json_values)
def test_neq_is_the_negation_of_eq(actual: Any, operand: Any) -> None:
    assert compare("neq", actual, operand) is not compare("eq", actual, operand)


@given(actuals, st.lists(json_values, max_size=4))
def test_not_in_is_the_negation_of_in_for_a_list_operand(actual: Any, options: list[Any]) -> None:
    assert compare("not_in", actual, options) is not compare("in", actual, options)


@given(json_values)
def test_a_value_equals_itself_and_exists_unless_null(value: Any) -> None:
    assert compare("eq", value, value)
    assert compare("exists", value, None) is (value is not None)


@given(json_values, json_values)
def test_equality_is_symmetric_and_bool_never_equals_a_number(left: Any, right: Any) -> None:
    assert json_equal(left, right) is json_equal(right, left)
    if isinstance(left, bool) and not isinstance(right, bool):
        assert not json_equal(left, right)


@given(st.integers(-(2**53), 2**53))
def test_an_integer_equals_its_float_and_not_its_string(number: int) -> None:
    assert compare("eq", number, float(number))
    assert not compare("eq", number, str(number))


@given(st.integers() | st.floats(allow_nan=False), st.integers() | st.floats(allow_nan=False))
def test_ordering_numbers_is_python_ordering(actual: float, operand: float) -> None:
    assert compare("gt", actual, operand) is (actual > operand)
    assert compare("gte", actual, operand) is (actual >= operand)
    assert compare("lt", actual, operand) is (actual < operand)
    assert compare("lte", actual, operand) is (actual <= operand)
