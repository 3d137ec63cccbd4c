"""The bounds on a JSON payload a tenant sends (a trigger's context, a webhook's payload, an event's data, a
customer's attributes, a template preview's context): its size, and how deep its objects and arrays nest.

Size: a trigger's context becomes the root of the instance context, stored with the instance and copied into its
steps, and an event's data is stored and handed to every run it resumes or starts; one call must not bloat every
row it touches.

Nesting (`MAX_JSON_NESTING`): every hop that carries a payload on wraps it in messages of its own (the engine's
batch calls, the instance answered with its context) and protobuf decoders refuse a message nested more than 100
deep. Event data nested 33 deep was accepted here and then made the engine refuse the whole batch call it
travelled in: the event stored but never routed, every caller of that batch told INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import struct_pb2
from kalcifer_common.errors import FieldViolation
from kalcifer_common.structs import MAX_JSON_NESTING, nesting_problem, struct_to_dict

MAX_PAYLOAD_BYTES: Final = 64 * 1024
# The fewest encoded bytes a Struct nested MAX_JSON_NESTING deep can take (each level adds at least a tag and a
# length twice): a smaller one, as most are, needs no walk.
_SHALLOW_BYTES: Final = 4 * MAX_JSON_NESTING


def payload_violations(
    struct: struct_pb2.Struct, field: str, *, converted: Mapping[str, Any] | None = None
) -> list[FieldViolation]:
    """`struct`'s encoded size, then its nesting, against their bounds; `converted` is `struct` as a dict when the
    caller has it already (`struct_to_dict`), so that it is not converted twice."""
    size = struct.ByteSize()
    if size > MAX_PAYLOAD_BYTES:
        return [FieldViolation(field, f"is {size} bytes encoded; at most {MAX_PAYLOAD_BYTES} are allowed")]
    if size < _SHALLOW_BYTES:
        return []
    return nesting_violations(struct_to_dict(struct) if converted is None else converted, field)


def nesting_violations(value: Mapping[str, Any], field: str) -> list[FieldViolation]:
    """`value`'s nesting against MAX_JSON_NESTING (for a payload already converted, its size bounded apart)."""
    problem = nesting_problem(value)
    return [FieldViolation(field, problem)] if problem else []
