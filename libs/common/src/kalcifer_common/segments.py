"""Segment membership: does a customer profile satisfy a segment's rules (SPEC 7)?

The single implementation, shared by the API (validating and previewing segments) and the engine
(`check_segment`, `segment_entry`, journey audiences), so a customer is a member in exactly the same cases
everywhere. Pure and dependency-free: plain JSON values in, a bool out.

A profile is the customer as the flows see it at `customer` in the context:
`{"external_id", "attributes": {...}, "tags": [...], "preferences": {...}, "timezone", "email", "phone"}`.
A rule is `{"field": "attributes.tier", "operator": "eq", "value": "gold"}`; `field` is a dotted path into the
profile. The path and the operator mean exactly what they mean in a `condition` node: both are decided by
`kalcifer_common.comparisons` (see its docstring). In short: a path that does not resolve is *missing*: it fails
every positive test (eq, gt, lt, contains, in) and passes the negative ones (neq, not_in), so "tier is not gold"
includes customers with no tier at all; values compare by JSON type: `true` never equals `1`, a number never
equals the string of it, and gt/lt only order two numbers or two strings (ISO dates compare correctly as
strings). Segments allow a subset of the comparison operators (`OPERATORS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from kalcifer_common.comparisons import compare, resolve

OPERATORS: Final = ("eq", "neq", "gt", "lt", "contains", "in", "not_in")
LIST_OPERATORS: Final = frozenset({"in", "not_in"})
MATCH_ALL: Final = "all"
MATCH_ANY: Final = "any"
MATCHES: Final = (MATCH_ALL, MATCH_ANY)
# Profile fields a rule may address; the mapping ones need a key after them ("attributes.tier").
SCALAR_FIELDS: Final = frozenset({"external_id", "tags", "timezone", "email", "phone"})
MAPPING_FIELDS: Final = frozenset({"attributes", "preferences"})


def rule_holds(rule: Mapping[str, Any], profile: Mapping[str, Any]) -> bool:
    """Whether one rule holds for the profile (`comparisons.compare` on the value at its `field`).

    An operator outside `OPERATORS` never holds: rules are validated on write, and a segment only ever means what
    its operators are documented to mean.
    """
    operator = rule.get("operator")
    if operator not in OPERATORS:
        return False
    return compare(str(operator), resolve(profile, str(rule.get("field", ""))), rule.get("value"))


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
