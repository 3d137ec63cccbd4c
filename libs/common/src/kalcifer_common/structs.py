"""`google.protobuf.Struct` <-> plain JSON values, once, at the edge.

Struct numbers are doubles; a number that is integral comes back as `int` so that `{"max": 3}` stays `3` in the
context and in stored JSON (and `1e20`-sized integrals stay floats, as JSON itself would have them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import struct_pb2

_MAX_EXACT_INT = 2**53
# How deep objects and arrays may nest in any JSON a tenant makes us carry: payloads it sends (the API refuses
# deeper ones) and node outputs (a deeper one fails its step). Contexts hold them a few levels down and travel in
# messages of their own, and protobuf decoders refuse a message nested over 100 deep, a Struct level taking three:
# 20 keeps every context, and every message carrying one, decodable everywhere.
MAX_JSON_NESTING: Final = 20


def value_to_python(value: struct_pb2.Value) -> Any:
    """One `Value` as None, bool, int, float, str, list or dict."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A `Struct` as a dict of plain JSON values."""
    return {key: value_to_python(item) for key, item in struct.fields.items()}


def dict_to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    """A dict of JSON values as a `Struct` (None gives an empty one)."""
    struct = struct_pb2.Struct()
    if data:
        struct.update(data)
    return struct


def nests_deeper_than(value: Any, levels: int) -> bool:
    """Whether objects (any mapping) and arrays nest more than `levels` deep in the JSON value `value` (`{}` and
    `[]` are one level, `{"a": {}}` and `{"a": []}` two, `{"a": [[]]}` three; a scalar none). The walk stops at the
    first container past `levels`."""
    if not isinstance(value, Mapping | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > levels:
            return True
        items = container.values() if isinstance(container, Mapping) else container
        stack.extend((item, depth + 1) for item in items if isinstance(item, Mapping | list))
    return False


def nesting_problem(value: Any) -> str | None:
    """Why the JSON value `value` nests too deep to be carried (`MAX_JSON_NESTING`), or None."""
    if nests_deeper_than(value, MAX_JSON_NESTING):
        return (
            f"nests objects and arrays more than {MAX_JSON_NESTING} deep; at most {MAX_JSON_NESTING} levels are allowed"
        )
    return None
