"""The write-time CEL rule (SPEC 10): the two known bombs are refused, ordinary expressions are not."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.expressions import (
    MAX_COMPREHENSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING,
    expression_problem,
)

TEN = "[1,2,3,4,5,6,7,8,9,10]"


def nested_maps(depth: int) -> str:
    expression = TEN
    for level in range(depth):
        expression = f"{TEN}.map(x{level}, {expression})"
    return expression


def test_twenty_thousand_additions_are_refused_by_length_in_milliseconds() -> None:
    bomb = "+".join(["1"] * 20_000)
    started = time.perf_counter()
    problem = expression_problem(bomb)
    elapsed = time.perf_counter() - started
    assert problem == f"is {len(bomb)} characters long; a CEL expression may have at most {MAX_EXPRESSION_LENGTH}"
    assert elapsed < 0.5  # refused before the parser sees it (compiling it takes ~150 ms)


def test_six_nested_maps_are_refused_for_their_comprehension_depth() -> None:
    bomb = nested_maps(6)
    assert len(bomb) < 250
    problem = expression_problem(bomb)
    assert problem is not None
    assert f"nests {MAX_COMPREHENSION_DEPTH + 1} comprehension macros" in problem


@pytest.mark.parametrize("depth", range(MAX_COMPREHENSION_DEPTH + 1))
def test_comprehensions_up_to_the_depth_limit_are_accepted(depth: int) -> None:
    assert expression_problem(nested_maps(depth)) is None


@pytest.mark.parametrize("macro", ["all", "exists", "exists_one", "map", "filter"])
def test_every_comprehension_macro_counts(macro: str) -> None:
    inner = "x > 0" if macro != "map" else "x"
    expression = f"{TEN}.{macro}(a, {TEN}.{macro}(b, {TEN}.{macro}(x, {inner})))"
    problem = expression_problem(expression)
    assert problem is not None
    assert "comprehension macros" in problem


def test_a_macro_name_inside_a_string_or_as_a_field_is_not_a_comprehension() -> None:
    assert expression_problem("event.map == 'x.map(a, b.map(c, d.map(e, f)))'") is None
    assert expression_problem("size(event.filter) > 0 && event.all.exists(x, x.filter == 1)") is None


def test_sequential_comprehensions_do_not_add_up() -> None:
    expression = " && ".join([f"{TEN}.all(a, {TEN}.exists(b, a == b))"] * 5)
    assert expression_problem(expression) is None


def test_bracket_nesting_is_capped() -> None:
    assert expression_problem("[" * MAX_NESTING + "]" * MAX_NESTING) is None
    problem = expression_problem("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1))
    assert problem is not None
    assert f"nests brackets {MAX_NESTING + 1} deep" in problem


def test_syntax_errors_name_the_position_in_one_line() -> None:
    problem = expression_problem("event.total >")
    assert problem is not None
    assert problem.startswith('"event.total >" is not a valid CEL expression (Syntax error')
    assert "\n" not in problem


def test_the_longest_allowed_chain_of_additions_is_accepted() -> None:
    chain = "+".join(["1"] * (MAX_EXPRESSION_LENGTH // 2))
    assert len(chain) <= MAX_EXPRESSION_LENGTH
    assert expression_problem(chain) is None


@given(st.text(max_size=300))
def test_any_text_gets_an_answer_never_an_exception(text: str) -> None:
    problem = expression_problem(text)
    assert problem is None or (isinstance(problem, str) and problem)
