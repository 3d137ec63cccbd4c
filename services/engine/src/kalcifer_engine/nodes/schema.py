"""JSON Schema for node configs: shared fragments (for built-ins and plugins alike), compiled validators and
violations in an operator's terms.

jsonschema ships no type information, so it is imported here only and wrapped in `ConfigValidator`.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from kalcifer_common.errors import FieldViolation

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

NON_EMPTY_STRING: dict[str, Any] = {"type": "string", "minLength": 1}
DURATION: dict[str, Any] = {
    "type": "string",
    "description": "A duration: a number and a unit s, m, h, d or w, e.g. '30s', '1.5h', '3d'.",
}
CEL_EXPRESSION: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
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


class ConfigValidator:
    """A compiled JSON Schema that reports violations with field paths relative to the config."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = Draft202012Validator(dict(schema))

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
    if keyword == "exclusiveMinimum":
        return f"must be greater than {expected}, got {quote(instance)}"
    if keyword == "minimum":
        return f"must be at least {expected}, got {quote(instance)}"
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
    """Why `schema` is not a usable draft 2020-12 schema for a node config (empty when it is)."""
    if not isinstance(schema, Mapping):
        return ["must be a JSON Schema object"]
    errors = [e.message for e in Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(dict(schema))]
    # Validation must never reach out to the network or the disk: only references inside the schema itself.
    errors.extend(
        f"$ref {quote(ref)} must point inside the schema (start with '#')"
        for ref in _refs(schema)
        if not ref.startswith("#")
    )
    return errors


def _refs(node: object) -> list[str]:
    found: list[str] = []
    pending: list[object] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, Mapping):
            for key, value in current.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    found.append(value)
                else:
                    pending.append(value)
        elif isinstance(current, list):
            pending.extend(current)
    return found
