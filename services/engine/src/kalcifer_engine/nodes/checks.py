"""Semantic checks shared by node types: what JSON Schema cannot say about durations, datetimes and CEL.

Each returns violations with paths relative to the config and stays silent on values of the wrong type, which
the schema already reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kalcifer_common.durations import DurationError, parse_duration
from kalcifer_common.errors import FieldViolation
from kalcifer_common.expressions import MAX_EXPRESSION_LENGTH, expression_problem

from kalcifer_engine.nodes.schema import quote


def duration_violations(config: Mapping[str, Any], *names: str) -> list[FieldViolation]:
    """Each string field in `names` must parse as a duration."""
    found: list[FieldViolation] = []
    for name in names:
        value = config.get(name)
        if isinstance(value, str):
            try:
                parse_duration(value)
            except DurationError as error:
                found.append(FieldViolation(name, str(error)))
    return found


def datetime_violations(config: Mapping[str, Any], name: str) -> list[FieldViolation]:
    """The string field `name` must be an ISO 8601 datetime with a UTC offset (a wall-clock time is ambiguous)."""
    value = config.get(name)
    if not isinstance(value, str):
        return []
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return [FieldViolation(name, f"{quote(value)} is not an ISO 8601 datetime (e.g. '2030-01-31T09:00:00+01:00')")]
    if parsed.utcoffset() is None:
        return [FieldViolation(name, f"{quote(value)} has no UTC offset; add one, e.g. 'Z' or '+01:00'")]
    return []


def expression_violations(config: Mapping[str, Any], *names: str) -> list[FieldViolation]:
    """Each non-empty string field in `names` must be a CEL expression within the limits of SPEC 10 (empty and
    overlong strings are the schema's business: `CEL_EXPRESSION` says so)."""
    found: list[FieldViolation] = []
    for name in names:
        value = config.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_EXPRESSION_LENGTH:
            problem = expression_problem(value)
            if problem is not None:
                found.append(FieldViolation(name, problem))
    return found
