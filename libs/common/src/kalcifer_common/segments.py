"""Segment membership: does a customer profile satisfy a segment's rules (SPEC 7)?

The single implementation, shared by the API (validating and previewing segments) and the engine
(`check_segment`, `segment_entry`, journey audiences), so a customer is a member in exactly the same cases
everywhere. Pure and dependency-free: plain JSON values in, a bool out.

A profile is the customer as the flows see it at `customer` in the context:
`{"external_id", "attributes": {...}, "tags": [...], "preferences": {...}, "timezone", "email", "phone"}`.
A rule is `{"field": "attributes.tier", "operator": "eq", "value": "gold"}`; `field` is a dotted path into the
profile. A path that does not resolve is *missing*: it fails every positive test (eq, gt, lt, contains, in) and
passes the negative ones (neq, not_in), so "tier is not gold" includes customers with no tier at all.

Values compare by JSON type: `true` never equals `1`, a number never equals the string of it, and gt/lt only
order two numbers or two strings (ISO dates compare correctly as strings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

OPERATORS: Final = ("eq", "neq", "gt", "lt", "contains", "in", "not_in")
LIST_OPERATORS: Final = frozenset({"in", "not_in"})
MATCH_ALL: Final = "all"
MATCH_ANY: Final = "any"
MATCHES: Final = (MATCH_ALL, MATCH_ANY)
# Profile fields a rule may address; the mapping ones need a key after them ("attributes.tier").
SCALAR_FIELDS: Final = frozenset({"external_id", "tags", "timezone", "email", "phone"})
MAPPING_FIELDS: Final = frozenset({"attributes", "preferences"})


class _Missing:
    """The value of a path that does not resolve (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def resolve(profile: Mapping[str, Any], path: str) -> Any:
    """The value at dotted `path` in `profile`, or `MISSING` when any step of the path is absent."""
    current: Any = profile
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    return current


def _kind(value: Any) -> str:
    """The JSON type of a value; bool is not a number here."""
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
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if kind == "list":
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if kind == "object":
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    return bool(left == right)


def _ordered(actual: Any, operand: Any) -> bool:
    kind = _kind(actual)
    return kind in ("number", "string") and kind == _kind(operand)


def _is_member(actual: Any, options: Iterable[Any]) -> bool:
    """`in`: the value is one of the options; a list value (tags) is in when any of its items is."""
    candidates = actual if _kind(actual) == "list" else [actual]
    return any(json_equal(candidate, option) for candidate in candidates for option in options)


def rule_holds(rule: Mapping[str, Any], profile: Mapping[str, Any]) -> bool:
    """Whether one rule holds for the profile; an unknown operator never holds (rules are validated on write)."""
    actual = resolve(profile, str(rule.get("field", "")))
    operator = rule.get("operator")
    operand: Any = rule.get("value")
    if operator == "neq":
        return actual is MISSING or not json_equal(actual, operand)
    if operator == "not_in":
        return actual is MISSING or (_kind(operand) == "list" and not _is_member(actual, operand))
    if actual is MISSING:
        return False
    if operator == "eq":
        return json_equal(actual, operand)
    if operator == "gt":
        return _ordered(actual, operand) and actual > operand
    if operator == "lt":
        return _ordered(actual, operand) and actual < operand
    if operator == "contains":
        if _kind(actual) == "list":
            return any(json_equal(item, operand) for item in actual)
        return _kind(actual) == "string" and _kind(operand) == "string" and operand in actual
    if operator == "in":
        return _kind(operand) == "list" and _is_member(actual, operand)
    return False


def matches(rules: Iterable[Mapping[str, Any]], match: str, profile: Mapping[str, Any]) -> bool:
    """Whether the profile is a member: every rule holds (`all`) or at least one does (`any`).

    With no rules, `all` is vacuously true and `any` false; an unknown `match` is never a member.
    """
    outcomes = (rule_holds(rule, profile) for rule in rules)
    if match == MATCH_ALL:
        return all(outcomes)
    if match == MATCH_ANY:
        return any(outcomes)
    return False


def customer_profile(
    *,
    external_id: str,
    attributes: Mapping[str, Any] | None = None,
    tags: Iterable[str] = (),
    preferences: Mapping[str, Any] | None = None,
    timezone: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """The profile dict rules (and flows, at `customer`) see; unset optional strings are left out (missing)."""
    profile: dict[str, Any] = {
        "external_id": external_id,
        "attributes": dict(attributes or {}),
        "tags": list(tags),
        "preferences": dict(preferences or {}),
    }
    for key, value in (("timezone", timezone), ("email", email), ("phone", phone)):
        if value:
            profile[key] = value
    return profile
