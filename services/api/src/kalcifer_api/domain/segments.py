"""Segment definitions: what a valid rule set is (SPEC 7). Membership itself is `kalcifer_common.segments`.

Violations name the field inside the `Segment` message (`name`, `match`, `rules[2].operator`), every problem at
once, so an operator fixes a rule set in one round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kalcifer_common.comparisons import json_kind
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.segments import LIST_OPERATORS, MAPPING_FIELDS, MATCHES, OPERATORS, SCALAR_FIELDS

from kalcifer_api.domain.customers import PREFERENCE_CHANNELS
from kalcifer_api.domain.marketing_common import non_finite_path

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000
MAX_RULES: Final = 100
MAX_LIST_OPERAND: Final = 1000
MAX_STRING_OPERAND: Final = 1000
SEGMENT_FIELDS: Final = ("name", "description", "match", "rules")


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """The user-editable part of a segment, validated."""

    name: str
    description: str
    match: str
    rules: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """A stored segment."""

    id: uuid.UUID
    name: str
    description: str
    match: str
    rules: list[dict[str, Any]]
    revision: int
    create_time: datetime
    update_time: datetime


def name_violations(value: str, path: str = "name") -> list[FieldViolation]:
    """Names: 1 to 200 characters once trimmed."""
    if not value.strip():
        return [FieldViolation(path, "must not be empty")]
    if len(value.strip()) > MAX_NAME_LENGTH:
        return [FieldViolation(path, f"must be at most {MAX_NAME_LENGTH} characters")]
    return []


def description_violations(value: str, path: str = "description") -> list[FieldViolation]:
    """Descriptions: free text up to 2000 characters."""
    if len(value) > MAX_DESCRIPTION_LENGTH:
        return [FieldViolation(path, f"must be at most {MAX_DESCRIPTION_LENGTH} characters")]
    return []


def _field_problem(field: str) -> str | None:
    if not field:
        return "is required"
    parts = field.split(".")
    if any(not part for part in parts):
        return f"{field!r} is not a dotted path (empty segment)"
    root, rest = parts[0], parts[1:]
    if root in SCALAR_FIELDS:
        return f"{root!r} has no sub-fields" if rest else None
    if root in MAPPING_FIELDS:
        if not rest:
            return f"name a key inside {root!r}, e.g. '{root}.{'tier' if root == 'attributes' else 'email'}'"
        if root == "preferences" and (len(rest) > 1 or rest[0] not in PREFERENCE_CHANNELS):
            return f"{field!r} is not a channel preference (one of {', '.join(PREFERENCE_CHANNELS)})"
        return None
    roots = sorted(SCALAR_FIELDS | MAPPING_FIELDS)
    return f"{root!r} is not a profile field (one of {', '.join(roots)})"


def _value_problem(operator: str, value: Any) -> str | None:
    kind = json_kind(value)
    if operator in LIST_OPERATORS:
        if kind != "list":
            return f"must be a list for {operator!r}"
        if not value:
            return f"must be a non-empty list for {operator!r}"
        if len(value) > MAX_LIST_OPERAND:
            return f"must hold at most {MAX_LIST_OPERAND} items"
        if any(json_kind(item) in ("list", "object") for item in value):
            return f"must be a list of scalars for {operator!r}"
        return None
    if operator in ("gt", "lt") and kind not in ("number", "string"):
        return f"must be a number or a string for {operator!r}"
    if operator == "contains" and kind not in ("string", "number", "bool"):
        return "must be a string, number or bool for 'contains'"
    if kind in ("list", "object"):
        return f"must be a scalar for {operator!r}"
    if kind == "string" and len(value) > MAX_STRING_OPERAND:
        return f"must be at most {MAX_STRING_OPERAND} characters"
    return None


def _finite_problem(value: Any) -> str | None:
    if non_finite_path(value, "value"):
        return "must hold only finite numbers (JSON has no NaN or infinity)"
    return None


def rule_violations(rules: Sequence[Mapping[str, Any]], path: str = "rules") -> list[FieldViolation]:
    """Every problem of every rule: unknown field or operator, operand of the wrong shape for its operator."""
    if not rules:
        return [FieldViolation(path, "must hold at least one rule")]
    if len(rules) > MAX_RULES:
        return [FieldViolation(path, f"must hold at most {MAX_RULES} rules")]
    violations: list[FieldViolation] = []
    for index, rule in enumerate(rules):
        where = f"{path}[{index}]"
        problem = _field_problem(str(rule.get("field", "")))
        if problem:
            violations.append(FieldViolation(f"{where}.field", problem))
        operator = str(rule.get("operator", ""))
        if operator not in OPERATORS:
            described = f"{operator!r} is not an operator" if operator else "is required"
            violations.append(FieldViolation(f"{where}.operator", f"{described} (one of {', '.join(OPERATORS)})"))
            continue
        # A rule without a "value" key had no operand on the wire (unlike an explicit JSON null).
        problem = (
            (_value_problem(operator, rule["value"]) or _finite_problem(rule["value"]))
            if "value" in rule
            else "is required"
        )
        if problem:
            violations.append(FieldViolation(f"{where}.value", problem))
    return violations


def match_violations(match: str, path: str = "match") -> list[FieldViolation]:
    """`match` must be all or any."""
    if match not in MATCHES:
        return [FieldViolation(path, "must be SEGMENT_MATCH_ALL or SEGMENT_MATCH_ANY")]
    return []


def validated_definition(
    *, name: str, description: str, match: str, rules: list[dict[str, Any]], fields: frozenset[str] | None = None
) -> SegmentDefinition:
    """Check the fields being written (all of them by default) and return the definition, names trimmed."""
    checked = frozenset(SEGMENT_FIELDS) if fields is None else fields
    violations: list[FieldViolation] = []
    if "name" in checked:
        violations += name_violations(name)
    if "description" in checked:
        violations += description_violations(description)
    if "match" in checked:
        violations += match_violations(match)
    if "rules" in checked:
        violations += rule_violations(rules)
    if violations:
        raise InvalidArgument(violations)
    return SegmentDefinition(name=name.strip(), description=description, match=match, rules=rules)
