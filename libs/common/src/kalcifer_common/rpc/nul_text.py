"""Finds U+0000 in a request's text, which PostgreSQL can store in neither `text` nor `jsonb`.

A proto string may hold NUL, JSON may spell it `\\u0000`, but every string a request carries can end up in a
column (names, ids, request ids, Struct keys and values stored as jsonb), where it would fail the statement
deep inside a transaction. So it is refused at the edge, for every call, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import struct_pb2
from google.protobuf.message import Message

NUL = "\x00"
# Keys in a path are cut to this many characters: the path goes back in the error, which must stay small.
SHOWN_KEY_LENGTH = 40


def _shown(key: object) -> str:
    text = repr(key)
    return text if len(text) <= SHOWN_KEY_LENGTH else f"{text[:SHOWN_KEY_LENGTH]}..."


def nul_path(message: Message, prefix: str = "") -> str | None:
    """The path of the first string of `message` (map keys and Struct keys included) that holds U+0000, e.g.
    `events[2].data['note']`, or None when there is none."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found = _map_nul_path(value, path)
        elif field.is_repeated:
            found = next(
                (hit for index, item in enumerate(value) if (hit := _item_nul_path(item, f"{path}[{index}]"))), None
            )
        else:
            found = _item_nul_path(value, path)
        if found is not None:
            return found
    return None


def _item_nul_path(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, struct_pb2.Struct):
        return _struct_nul_path(value, path)
    if isinstance(value, struct_pb2.Value):
        return _value_nul_path(value, path)
    if isinstance(value, Message):
        return nul_path(value, f"{path}.")
    return None


def _map_nul_path(mapping: Mapping[object, object], path: str) -> str | None:
    for key, item in mapping.items():
        if isinstance(key, str) and NUL in key:
            return f"{path}[{_shown(key)}]"
        if (found := _item_nul_path(item, f"{path}[{_shown(key)}]")) is not None:
            return found
    return None


def _struct_nul_path(struct: struct_pb2.Struct, path: str) -> str | None:
    for key, item in struct.fields.items():
        if NUL in key:
            return f"{path}[{_shown(key)}]"
        if (found := _value_nul_path(item, f"{path}[{_shown(key)}]")) is not None:
            return found
    return None


def _value_nul_path(value: struct_pb2.Value, path: str) -> str | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return path if NUL in value.string_value else None
    if kind == "struct_value":
        return _struct_nul_path(value.struct_value, path)
    if kind == "list_value":
        for index, item in enumerate(value.list_value.values):
            if (found := _value_nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None
