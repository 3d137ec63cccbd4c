"""Comparing a value of a JSON document with an operand: the one rule of `condition` nodes and segment rules.

SPEC 7 says segments are "evaluated by the same code as `condition` nodes"; this module is that code. The
`condition` node (SPEC 6.2) compares a value of the instance context, a segment rule (SPEC 7) a value of the
customer profile; both resolve the path with `resolve` and decide with `compare`. Pure and dependency-free:
plain JSON values in, a bool out, never an exception.

Paths. A path is dotted (`customer.attributes.tier`). Each step names a key of an object, or an index of a
list: a step of ASCII digits in canonical form (`0`, `12`; not `01`, `-1` or `+1`) picks that item, counted from
0 (`event.items.0.sku`). A path that does not resolve (an absent key, an index past the end, a step into a
string, number, bool or null) is `MISSING`, which is not JSON null: `{"tier": null}` has a `tier` that is null.

Values compare by JSON type (`json_kind`): null, bool, number, string, list, object; bool is not a number.
- `eq` / `neq`: `json_equal`: `true` never equals `1`, `1` equals `1.0`, a number never equals the string of it,
  lists equal item by item and objects key by key with the same rule.
- `gt`, `gte`, `lt`, `lte`: order two numbers or two strings (by code point, so ISO dates order correctly);
  anything else (a bool, null, a list, an object, a number with a string) is false.
- `contains`: a list contains the operand when one of its items is `json_equal` to it; a string contains a
  string operand as a substring; an object contains a string operand that is one of its keys. Otherwise false.
- `in` / `not_in`: the operand must be a list (otherwise both are false). A value is in when it is `json_equal`
  to one of the options; a list value (tags) is in when any of its items is, so `["vip", "new"] in ["vip"]`.
- `exists`: the path resolves to a value other than null.
- A `MISSING` value fails every positive test (eq, gt, gte, lt, lte, contains, in) and passes the negative ones
  (`neq`, `not_in`): "tier is not gold" includes customers with no tier at all. So `neq` is always the negation
  of `eq`, and `not_in` of `in` whenever the operand is a list.
- An unknown operator is false.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

OPERATORS: Final = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "not_in", "exists")
ORDERING_OPERATORS: Final = frozenset({"gt", "gte", "lt", "lte"})


class _Missing:
    """The value of a path that does not resolve (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def _list_index(step: str, length: int) -> int | None:
    """The list index a path step names, if it is a canonical non-negative integer below `length`."""
    if not (step.isascii() and step.isdigit()) or (len(step) > 1 and step[0] == "0"):
        return None
    index = int(step)
    return index if index < length else None


def resolve(data: Any, path: str) -> Any:
    """The value at dotted `path` in `data` (through object keys and list indexes), or `MISSING`."""
    current: Any = data
    for step in path.split("."):
        if isinstance(current, Mapping):
            if step not in current:
                return MISSING
            current = current[step]
        elif isinstance(current, list | tuple):
            index = _list_index(step, len(current))
            if index is None:
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """`resolve` in the form `NodeContext.lookup` answers: `(True, value)`, or `(False, None)` when missing."""
    value = resolve(data, path)
    return (False, None) if value is MISSING else (True, value)


def json_kind(value: Any) -> str:
    """The JSON type of a value: null, bool, number, string, list, object (or other); bool is not a number."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "other"


def json_equal(left: Any, right: Any) -> bool:
    """Equality by JSON type: `True != 1`, `1 == 1.0`, lists and objects compared element by element."""
    kind = json_kind(left)
    if kind != json_kind(right):
        return False
    if kind == "list":
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if kind == "object":
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    if kind == "other":
        return False
    return bool(left == right)


def _ordered(operator: str, actual: Any, operand: Any) -> bool:
    kind = json_kind(actual)
    if kind not in ("number", "string") or kind != json_kind(operand):
        return False
    if operator == "gt":
        return bool(actual > operand)
    if operator == "gte":
        return bool(actual >= operand)
    if operator == "lt":
        return bool(actual < operand)
    return bool(actual <= operand)


def _contains(actual: Any, operand: Any) -> bool:
    kind = json_kind(actual)
    if kind == "list":
        return any(json_equal(item, operand) for item in actual)
    if kind == "string":
        return json_kind(operand) == "string" and operand in actual
    if kind == "object":
        return json_kind(operand) == "string" and operand in actual
    return False


def _is_in(actual: Any, options: Any) -> bool:
    """`in` for a resolved value and a list operand: the value, or for a list value any of its items, is an option."""
    candidates = actual if json_kind(actual) == "list" else [actual]
    return any(json_equal(candidate, option) for candidate in candidates for option in options)


def compare(operator: str, actual: Any, operand: Any) -> bool:
    """Whether `actual` (a resolved value, or `MISSING`) satisfies `operator` with `operand`; never raises."""
    if operator == "exists":
        return actual is not MISSING and actual is not None
    if operator == "neq":
        return actual is MISSING or not json_equal(actual, operand)
    if operator == "not_in":
        return actual is MISSING or (json_kind(operand) == "list" and not _is_in(actual, operand))
    if actual is MISSING:
        return False
    if operator == "eq":
        return json_equal(actual, operand)
    if operator in ORDERING_OPERATORS:
        return _ordered(operator, actual, operand)
    if operator == "contains":
        return _contains(actual, operand)
    if operator == "in":
        return json_kind(operand) == "list" and _is_in(actual, operand)
    return False
