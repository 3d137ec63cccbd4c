"""Tenant JSON Schemas: the safe subset (SPEC 10) and a validator whose cost no schema can blow up."""

from __future__ import annotations

from typing import Any

import pytest
from kalcifer_engine.nodes.safe_schema import MAX_DEPTH, MAX_EXPANDED_SUBSCHEMAS, schema_problems
from kalcifer_engine.nodes.schema import ConfigValidator, schema_errors

REDOS = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}
RECURSIVE = {"type": "object", "properties": {"child": {"$ref": "#"}}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array"}
    inner = schema
    for _ in range(depth):
        inner["items"] = {"type": "array"}
        inner = inner["items"]
    return schema


def test_the_redos_schema_is_refused() -> None:
    assert schema_errors(REDOS) == [
        "#/properties/name: pattern '^(a+)+$' nests a quantifier inside a quantified group (like '(a+)+'), "
        "which backtracking engines run in exponential time"
    ]


def test_the_recursive_schema_is_refused() -> None:
    assert schema_errors(RECURSIVE) == ["$ref recurses (# -> #); recursive schemas are not supported"]


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "#"}, "$ref recurses (# -> #)"),
        (
            {
                "$defs": {"a": {"items": {"$ref": "#/$defs/b"}}, "b": {"not": {"$ref": "#/$defs/a"}}},
                "$ref": "#/$defs/a",
            },
            "$ref recurses (#/$defs/a -> #/$defs/b -> #/$defs/a)",
        ),
        ({"$defs": {"a b": {"$ref": "#/$defs/a%20b"}}}, "$ref recurses"),
        ({"$ref": "https://example.com/s.json"}, "must point inside the schema"),
        ({"$ref": "#/$defs/missing"}, "points at nothing"),
        ({"$dynamicRef": "#meta"}, "'$dynamicRef' dynamic references are not supported"),
        ({"$id": "https://example.com/s"}, "'$id' identifiers"),
        ({"unevaluatedProperties": False}, "'unevaluatedProperties' is not supported"),
        ({"patternProperties": {"^(x*)*$": {}}}, "nests a quantifier"),
        ({"properties": {"a": {"pattern": "(a)\\1"}}}, "is not supported (invalid escape sequence"),
        ({"properties": {"a": {"pattern": "(?=lookahead)"}}}, "patterns are matched by RE2"),
        ({"properties": {"a": {"pattern": "a" * 1001}}}, "at most 1000 characters"),
        (nested(MAX_DEPTH + 5), f"at most {MAX_DEPTH}"),
    ],
)
def test_unsafe_schemas_are_named(schema: dict[str, Any], problem: str) -> None:
    problems = schema_problems(schema)
    assert len(problems) == 1
    assert problem in problems[0]


def test_reference_fan_out_is_bounded() -> None:
    # 2^30 subschemas once expanded, from a schema of a few kilobytes.
    defs: dict[str, Any] = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    defs["d30"] = {"type": "string"}
    schema = {"$defs": defs, "$ref": "#/$defs/d0"}
    assert schema_problems(schema) == [
        f"expands to over {MAX_EXPANDED_SUBSCHEMAS} subschemas once its references are followed"
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}}},
        {"$defs": {"money": {"type": "number", "minimum": 0}}, "properties": {"price": {"$ref": "#/$defs/money"}}},
        {"properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "integer"}}},
        {"patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False},
        nested(MAX_DEPTH - 1),
    ],
)
def test_ordinary_schemas_are_accepted(schema: dict[str, Any]) -> None:
    assert schema_errors(schema) == []


def test_patterns_are_matched_by_re2_with_json_schema_search_semantics() -> None:
    validator = ConfigValidator(
        {
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": "[0-9]{3}"}},
            "patternProperties": {"^x-": {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    assert validator.violations({"code": "ab123cd", "x-n": 1}) == []
    found = {v.field: v.description for v in validator.violations({"code": "ab", "x-n": "one", "y": 1})}
    assert set(found) == {"code", '["x-n"]', "y"}
    assert "does not match" in found["code"]


def test_unique_items_follows_json_equality() -> None:
    validator = ConfigValidator({"type": "array", "uniqueItems": True})
    assert validator.violations([1, True, "1", None, {"a": 1, "b": 2}, {"a": 2}]) == []
    assert validator.violations([1, 1.0]) != []
    assert validator.violations([{"a": 1, "b": [1]}, {"b": [1.0], "a": 1}]) != []
    assert validator.violations([*range(50_000), 49_999.0]) != []  # hashed: pairwise it would take minutes
