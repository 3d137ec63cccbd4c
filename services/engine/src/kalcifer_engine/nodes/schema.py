"""JSON Schema for node configs: shared fragments (for built-ins and plugins alike), compiled validators and
violations in an operator's terms.

jsonschema ships no type information, so it is imported here only and wrapped in `ConfigValidator`. The validator
is draft 2020-12 with four keywords replaced so that no schema can make validation slow: `pattern`,
`patternProperties` and `additionalProperties` match with RE2 (`patterns.py`), and `uniqueItems` hashes instead
of comparing every pair. Which schemas are allowed at all is `safe_schema.py`'s business.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator, ValidationError, validators  # type: ignore[import-untyped]
from kalcifer_common.errors import FieldViolation
from kalcifer_common.expressions import MAX_EXPRESSION_LENGTH

from kalcifer_engine.nodes.patterns import pattern_matches
from kalcifer_engine.nodes.safe_schema import schema_problems

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

NON_EMPTY_STRING: dict[str, Any] = {"type": "string", "minLength": 1}
DURATION: dict[str, Any] = {
    "type": "string",
    "description": "A duration: a number and a unit s, m, h, d or w, e.g. '30s', '1.5h', '3d'.",
}
CEL_EXPRESSION: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_EXPRESSION_LENGTH,
    "description": "A CEL expression over `event` and the instance context.",
}
CHANNELS = ("email", "sms", "push", "whatsapp", "in_app")
CHANNEL: dict[str, Any] = {"enum": list(CHANNELS)}
TEMPLATE_DATA: dict[str, Any] = {
    "type": "object",
    "description": "Extra variables for the template, merged over the context.",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SHOWN = 60


def object_schema(
    description: str, properties: Mapping[str, Any], required: Iterable[str] = (), **extra: Any
) -> dict[str, Any]:
    """A closed object schema (`additionalProperties: false`), the shape of every node config."""
    return {
        "$schema": SCHEMA_DIALECT,
        "description": description,
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


def field_path(parts: Iterable[str | int]) -> str:
    """`["variants", 1, "key"]` -> `variants[1].key`; keys that are not identifiers are quoted: `fields["a b"]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{quote(part)}]"
    return out


def quote(value: object) -> str:
    """A JSON rendering of `value` for a message, cut short when long."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Only values that did not come from JSON get here (huge ints, deep nesting); reprlib bounds depth and size.
        text = reprlib.repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not pattern_matches(pattern, instance):
        yield ValidationError(f"{quote(instance)} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if pattern_matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in known and not any(pattern_matches(p, k) for p in patterns)]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif allowed is False and extras:
        listed = ", ".join(quote(extra) for extra in sorted(extras)[:10])
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if unique is True and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _equality_key(item)
            if key in seen:
                yield ValidationError(f"has the item {quote(item)} more than once")
                return
            seen.add(key)


def _equality_key(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 and 1.0 alike, true and 1 not, object keys unordered)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_equality_key(item) for item in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((key, _equality_key(item)) for key, item in value.items()))
    return ("other", repr(value))


_Validator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "uniqueItems": _unique_items,
    },
)


class ConfigValidator:
    """A compiled JSON Schema that reports violations with field paths relative to the config."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = _Validator(dict(schema))

    def violations(self, config: Any) -> list[FieldViolation]:
        """Every schema violation of `config`; field "" is the config itself."""
        found: list[FieldViolation] = []
        for error in self._validator.iter_errors(config):
            path: list[str | int] = list(error.absolute_path)
            keyword = error.validator
            instance = error.instance
            if keyword == "required" and isinstance(instance, Mapping):
                # One error per missing property: point at the property, not at the object holding it.
                missing = [p for p in error.validator_value if p not in instance]
                name = next((p for p in missing if error.message.startswith(repr(p))), None)
                found.append(FieldViolation(field_path([*path, name] if name else path), "is required"))
            elif keyword == "additionalProperties" and isinstance(instance, Mapping):
                allowed = sorted(error.schema.get("properties", {}))
                hint = f"; allowed: {', '.join(allowed)}" if allowed else "; this config takes no fields"
                for extra in instance:
                    if extra not in allowed:
                        found.append(FieldViolation(field_path([*path, str(extra)]), f"unknown field{hint}"))
            else:
                found.append(
                    FieldViolation(field_path(path), _describe(keyword, error.validator_value, instance, error.message))
                )
        return found


def _describe(keyword: str, expected: Any, instance: Any, message: str) -> str:
    """A message in the operator's terms; falls back to jsonschema's own for rarer keywords."""
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        return f"must be {' or '.join(_article(t) for t in types)}, got {json_type(instance)}"
    if keyword == "enum":
        return f"must be one of {', '.join(quote(v) for v in expected)}; got {quote(instance)}"
    if keyword == "minLength" and expected == 1:
        return "must not be empty"
    if keyword == "pattern":
        return f"{quote(instance)} does not match the pattern {expected}"
    if keyword == "uniqueItems":
        return message
    if keyword == "exclusiveMinimum":
        return f"must be greater than {expected}, got {quote(instance)}"
    if keyword == "minimum":
        return f"must be at least {expected}, got {quote(instance)}"
    if keyword == "maxLength":
        return f"must be at most {expected} characters, got {len(instance) if isinstance(instance, str) else '?'}"
    if keyword == "minItems":
        return f"needs at least {expected} item{'s' if expected != 1 else ''}"
    if keyword == "maxItems":
        return f"takes at most {expected} items"
    if keyword == "minProperties":
        return f"needs at least {expected} field{'s' if expected != 1 else ''}"
    return message if len(message) <= 200 else message[:199] + "…"


def _article(type_name: str) -> str:
    return {"array": "an array", "object": "an object", "integer": "an integer"}.get(type_name, f"a {type_name}")


def json_type(value: object) -> str:
    """The JSON name of `value`'s type, with an article: "an integer", "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def compiled_validator(schema: Mapping[str, Any]) -> ConfigValidator:
    """The validator of `schema`, compiled once per distinct schema (bounded: tenants' types come and go)."""
    return _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


@lru_cache(maxsize=512)
def _compiled(canonical_schema: bytes) -> ConfigValidator:
    return ConfigValidator(orjson.loads(canonical_schema))


def schema_errors(schema: object) -> list[str]:
    """Why `schema` is not a usable draft 2020-12 schema for a node config (empty when it is): outside the safe
    subset (checked first: it bounds what the meta-schema check then walks), or not a valid schema."""
    if not isinstance(schema, Mapping):
        return ["must be a JSON Schema object"]
    unsafe = schema_problems(schema)
    if unsafe:
        return unsafe
    return [e.message for e in Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(dict(schema))]
