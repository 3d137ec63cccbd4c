"""Hypothesis strategies for a request of any public RPC, built from the generated message descriptors.

Every service of every `protos/kalcifer/v1/*.proto` is found through its generated `*_pb2.DESCRIPTOR`, so a new
RPC is fuzzed without a test being edited. A request is built field by field from its descriptor: strings that
are valid code points but nasty ones (NUL, RTL and zero-width marks, 4-byte emoji, very long), extreme and
negative numbers, unknown enum numbers, long repeated fields and maps, `Struct`s that are huge or nested far
beyond what the server parses, `Timestamp`s out of range, ids that are no UUIDs / UUIDs nobody has / another
tenant's. Some bodies are no message at all (random bytes, a truncated message, a message with a garbage tail),
and some calls carry no credential, a malformed one or the wrong one.

Big values are built by repetition (a drawn unit times a drawn count) and deep ones by a drawn depth, so one
example stays within Hypothesis's budget of choices however large the request it makes.
"""

from __future__ import annotations

import base64
import importlib
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from google.protobuf import message_factory, struct_pb2, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

PUBLIC_PACKAGE = "kalcifer.v1"
ADMIN_SERVICES = frozenset({"kalcifer.v1.TenantService"})
READ_ONLY_PREFIXES = ("Get", "List", "Validate")

# Valid code points (surrogates cannot travel in a proto string) chosen to break naive code: NUL and other
# controls, bidi overrides, zero-width and joiners, BOM, combining marks, non-ASCII digits and case foldings,
# 4-byte characters, the last code point, line separators; plus strings that look like syntax of other layers.
NASTY_FRAGMENTS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\t\n\r",
    "\u0085\u2028\u2029",
    "\u202e",
    "\u202egnp.exe",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u00a0",
    "e\u0301\u0301\u0301",
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001d542",
    "\U0010ffff",
    "\ufffd",
    "\ufdd0",
    "\u0663\u0664",
    "\u2167",
    "\ufb01",
    "\u0130",
    "\u00df",
    "ǅ",
    "'",
    '"',
    "\\",
    "%s%n",
    "{{7*7}}",
    "${jndi:x}",
    "'; DROP TABLE flows; --",
    "../../../etc/passwd",
    "null",
    "NaN",
    "-0",
    "1e999",
    "<script>",
    "\\u0000",
)
# Lengths around the limits of the API (64, 100, 200, 255, 256, 1000, 4096, 64 Ki) and, rarely, a huge one.
LONG_COUNTS = (65, 101, 201, 256, 257, 1001, 4097, 65_537) * 4 + (300_000,)
PLAIN_ALPHABET = string.ascii_letters + string.digits + "_-./:"


def _repeat(pair: tuple[str, int]) -> str:
    return pair[0] * pair[1]


def texts() -> st.SearchStrategy[str]:
    """Strings a hostile or careless client sends."""
    unit = st.sampled_from(NASTY_FRAGMENTS) | st.sampled_from(("x", "é", "\U0001f600", "a\u0301"))
    return st.one_of(
        st.sampled_from(NASTY_FRAGMENTS),
        st.text(st.characters(codec="utf-8"), max_size=16),  # every code point but the surrogates
        st.text(PLAIN_ALPHABET, min_size=1, max_size=24),
        st.lists(st.sampled_from(NASTY_FRAGMENTS), min_size=2, max_size=5).map("".join),
        st.tuples(unit, st.sampled_from(LONG_COUNTS)).map(_repeat),
    )


def _malformed_uuid(value: uuid.UUID) -> st.SearchStrategy[str]:
    text = str(value)
    return st.sampled_from(
        (
            text.upper(),
            "{" + text + "}",
            "urn:uuid:" + text,
            text.replace("-", ""),
            text + " ",
            " " + text,
            text + "\x00",
            text[:-1],
            text + "0",
            text.replace("-", "_"),
            "1_" * 15 + "11",
            "\u0663" * 32,
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        )
    )


@dataclass
class Pools:
    """What the fuzzer knows of the suite, growing as calls succeed: fed to the strategies at draw time, so a
    request can name a resource an earlier request created."""

    own_ids: list[str] = field(default_factory=list)
    foreign_ids: list[str] = field(default_factory=list)
    participants: list[str] = field(default_factory=lambda: ["alice", "bob"])
    # Tokens the API issued, by the full name of the list request that got them (a token fits its own query).
    page_tokens: dict[str, list[str]] = field(default_factory=dict)
    node_types: list[str] = field(default_factory=lambda: ["event_entry", "exit"])
    graphs: list[Message] = field(default_factory=list)
    webhook_paths: list[str] = field(default_factory=lambda: ["orders/paid"])
    event_types: list[str] = field(default_factory=lambda: ["signup", "order.paid"])
    # Requests (encoded) that succeeded, by the full name of their message: what mutations start from.
    templates: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, pool: list[Any], value: Any, *, limit: int = 500) -> None:
        """Remember `value` (bounded: the oldest entries make room)."""
        if value and value not in pool:
            pool.append(value)
            del pool[:-limit]


def _member(pool: Sequence[Any], empty: Any = "") -> st.SearchStrategy[Any]:
    """One entry of a pool that may grow between draws (the index is drawn, the entry read at draw time)."""
    return st.integers(min_value=0, max_value=2**16).map(lambda index: pool[index % len(pool)] if pool else empty)


# What one request may carry in total through a repeated field or a map (the server's limit is 16 MiB).
REPEAT_BUDGET_BYTES = 1024 * 1024


def _size_of(item: Any) -> int:
    if isinstance(item, Message):
        return item.ByteSize()
    if isinstance(item, str | bytes):
        return len(item.encode() if isinstance(item, str) else item)
    return 8


def _repeated(pair: tuple[Any, int]) -> list[Any]:
    """`count` copies of `item`, fewer when they would exceed the repeat budget."""
    item, count = pair
    return [item] * max(1, min(count, REPEAT_BUDGET_BYTES // max(_size_of(item), 1)))


def small_scalars() -> st.SearchStrategy[Any]:
    """Struct leaves of a few bytes each (for wide Structs)."""
    return st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NASTY_FRAGMENTS)
    )


def json_scalars() -> st.SearchStrategy[Any]:
    """Struct leaves: doubles at their edges (NaN, infinities, -0.0, beyond 2**53) and nasty strings."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**60), max_value=2**60).map(float),
        st.sampled_from((2.0**53 + 1, 1e308, -1e308, 5e-324, -0.0)),
        texts(),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Small JSON documents with nasty keys and leaves."""
    return st.recursive(
        json_scalars(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(texts(), children, max_size=4),
        max_leaves=8,
    )


def _set_value(target: struct_pb2.Value, value: Any) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, list):
        target.list_value.SetInParent()
        for item in value:
            _set_value(target.list_value.values.add(), item)
    else:
        _fill_struct(target.struct_value, value)


def _fill_struct(target: struct_pb2.Struct, data: dict[str, Any]) -> None:
    target.SetInParent()
    for key, item in data.items():
        _set_value(target.fields[key], item)


def _struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    _fill_struct(struct, data)
    return struct


def deep_struct(depth: int, through_lists: bool) -> struct_pb2.Struct:
    """A Struct nested `depth` JSON levels deep (each level three messages on the wire: Struct, map entry, Value);
    the server parses at most 100 message levels, so depths beyond ~33 must be refused, not crash it."""
    root = struct_pb2.Struct()
    current = root
    for level in range(depth):
        value = current.fields["d"]
        if through_lists and level % 2:
            value.list_value.SetInParent()
            current = value.list_value.values.add().struct_value
        else:
            current = value.struct_value
        current.SetInParent()
    return root


def wide_struct(width: int, leaf: Any) -> struct_pb2.Struct:
    """A Struct with `width` keys, each holding `leaf`."""
    struct = struct_pb2.Struct()
    for index in range(width):
        _set_value(struct.fields[f"k{index}"], leaf)
    return struct


def structs() -> st.SearchStrategy[struct_pb2.Struct]:
    """Struct payloads: small and nasty, deeply nested, wide, or holding one huge string."""
    small = st.dictionaries(texts(), json_values(), max_size=5).map(_struct_of)
    return st.one_of(
        *[small] * 6,
        st.builds(deep_struct, st.sampled_from((8, 20, 30, 32, 33, 34, 40, 64, 101, 150, 700)), st.booleans()),
        st.builds(wide_struct, st.sampled_from((100, 100, 1000, 1000, 5000, 30_000)), small_scalars()),
        st.builds(wide_struct, st.just(1), st.sampled_from(LONG_COUNTS).map(lambda n: "\U0001f600" * n)),
    )


def values() -> st.SearchStrategy[struct_pb2.Value]:
    """A single `google.protobuf.Value` (segment rule values)."""

    def wrap(item: Any) -> struct_pb2.Value:
        value = struct_pb2.Value()
        _set_value(value, item)
        return value

    def nested(struct: struct_pb2.Struct) -> struct_pb2.Value:
        value = struct_pb2.Value()
        value.struct_value.CopyFrom(struct)
        return value

    return st.one_of(json_values().map(wrap), structs().map(nested), st.just(struct_pb2.Value()))


SECONDS_EDGES = (
    0,
    -1,
    -62_135_596_800,  # 0001-01-01, the first valid second
    -62_135_596_801,
    253_402_300_799,  # 9999-12-31T23:59:59, the last
    253_402_300_800,
    2**31,
    -(2**31),
    2**63 - 1,
    -(2**63),
)
NANOS_EDGES = (0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))


def timestamps(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Timestamps inside and far outside the range `Timestamp` allows (years 1..9999, nanos 0..999999999)."""
    seconds = st.sampled_from(SECONDS_EDGES) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    nanos = st.sampled_from(NANOS_EDGES) | st.integers(min_value=-(2**31), max_value=2**31 - 1)
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


INT32_EDGES = (0, 1, -1, 2, 50, 999, 1000, 1001, 2**31 - 1, -(2**31))
INT64_EDGES = (0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1)


def _integers(bits: int, *, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [e for e in (*INT32_EDGES, *INT64_EDGES) if low <= e <= high]
    return st.sampled_from(edges) | st.integers(min_value=low, max_value=high)


def _by_field_name(pools: Pools) -> dict[str, st.SearchStrategy[Any]]:
    """Plausible values for fields with a meaning (mixed with nasty text by the caller), so requests get past the
    first check often enough to reach the code behind it."""
    node_ids = st.sampled_from(("entry", "tag", "done", "a", "b", "exit"))
    ids = resource_ids(pools)
    return {
        "participant_id": _member(pools.participants),
        "external_id": _member(pools.participants),
        "request_id": st.sampled_from(("", "", "r-1", "r-2")) | st.uuids().map(str),
        "etag": st.sampled_from(("", '"1"', '"2"', '"0"', '"-1"', "1", '"99999999999999999999"')),
        "webhook_path": _member(pools.webhook_paths) | st.sampled_from(("a", "A/b", "a//b", "/a", "a/")),
        "event_type": _member(pools.event_types),
        "type": _member(pools.node_types),
        "key": _member(pools.node_types) | st.sampled_from(("my_hook", "hook_2", "A", "a" * 65)),
        "node_id": node_ids,
        "node_ids": node_ids,
        "entry_node_id": node_ids,
        "source": node_ids,
        "target": node_ids,
        "branch": st.sampled_from(("", "true", "false", "default", "a", "b")),
        "branches": st.sampled_from(("true", "false", "default")),
        "timezone": st.sampled_from(
            ("UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Mars/Olympus", "../../etc/passwd", "posix/UTC")
        ),
        "cron": st.sampled_from(
            ("0 0 1 1 *", "0 0 29 2 1", "0 0 31 2 *", "61 * * * *", "* * * *", "@reboot", "*/0 * * * *", "0 0 * * 8")
        ),
        "time_window": st.sampled_from(("1h", "7d", "0s", "-1h", "99999999999999d", "1.5h", "P1D")),
        "start": st.sampled_from(("22:00", "00:00", "23:59", "24:00", "25:61", "9:00")),
        "end": st.sampled_from(("08:00", "00:00", "22:00", "-1:00")),
        "filter": st.sampled_from(
            (
                "",
                "data.total > 10",
                "true",
                "data.",
                "[1,2,3].map(x, [x, x, x, x, x, x, x, x]).map(y, [y, y, y, y, y, y, y, y]).size() > 0",
                "size('" + "a" * 5000 + "') > 0",
                "1/0 == 1",
            )
        ),
        "operator": st.sampled_from(("eq", "neq", "gt", "lt", "contains", "in", "not_in", "regex", "EQ")),
        "field": st.sampled_from(("attributes.plan", "tags", "email", "preferences.email", "attributes", "x.y.z")),
        "channel": st.sampled_from(("email", "sms", "push", "whatsapp", "in_app", "pigeon")),
        "email": st.sampled_from(("a@example.com", "a@b", "@", "a" * 250 + "@example.com")),
        "phone": st.sampled_from(("+33612345678", "+1", "0612345678", "+" + "9" * 40)),
        "endpoint_url": st.sampled_from(
            (
                "https://hooks.example.com/x",
                "http://hooks.example.com/x",
                "http://169.254.169.254/latest/meta-data",
                "http://127.0.0.1:1/",
                "file:///etc/passwd",
                "https://",
                "https://[::1]/",
            )
        ),
        "name": st.text(PLAIN_ALPHABET, min_size=1, max_size=12),
        "tag": st.sampled_from(("vip", "new", "a b", "VIP")),
        "tags": st.sampled_from(("vip", "new", "a b", "VIP")),
        "id": ids,
        "tenant_id": ids,
        "paths": MASK_PATHS,
    }


def resource_ids(pools: Pools) -> st.SearchStrategy[str]:
    """Ids of the caller's resources, of another tenant's, UUIDs nobody has, and strings that are no UUIDs."""
    return st.one_of(
        _member(pools.own_ids),
        _member(pools.own_ids),
        _member(pools.foreign_ids),
        st.uuids().map(str),
        st.uuids().flatmap(_malformed_uuid),
    )


def page_tokens(tokens: list[str]) -> st.SearchStrategy[str]:
    """None, tokens the API issued for this list, and forged ones."""
    return st.one_of(st.just(""), _member(tokens), forged_tokens(tokens))


def forged_tokens(tokens: list[str]) -> st.SearchStrategy[str]:
    """Page tokens that are no token (junk, base64 of junk) and tokens the API issued with their inside (sort key,
    last id, query fingerprint) swapped for junk."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def tampered(pair: tuple[str, dict[str, Any]]) -> str:
        token, changes = pair
        try:
            inside = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) if token else {}
        except ValueError:
            inside = {}
        return b64(orjson.dumps({**(inside if isinstance(inside, dict) else {}), **changes}))

    junk = st.one_of(texts(), json_values(), st.integers(min_value=-(2**63), max_value=2**64 - 1))
    changes = st.dictionaries(st.sampled_from(("k", "i", "q")), junk, min_size=1)
    return st.one_of(
        st.binary(max_size=40).map(b64),
        json_values().map(lambda value: b64(orjson.dumps(value))),
        st.tuples(_member(tokens), changes).map(tampered),
        st.tuples(_member(tokens), changes).map(tampered),
    )


MASK_PATHS = st.sampled_from(
    ("name", "description", "re_entry", "flow_id", "rules", "match", "goals", "status", "id", "a.b", "")
)


def field_masks(cls: type[Message]) -> st.SearchStrategy[Message]:
    """`update_mask`s naming real fields, unknown ones, nested ones and the same one twice."""
    return st.lists(MASK_PATHS | texts(), max_size=4).map(lambda chosen: cls(paths=chosen))


class RequestStrategies:
    """Builds, per message descriptor, a strategy of messages of that type (cached; well-known types and a few
    fields of known meaning get dedicated strategies, everything else is derived from the field's type)."""

    def __init__(self, pools: Pools) -> None:
        self.pools = pools
        self._named = _by_field_name(pools)
        self._cache: dict[str, st.SearchStrategy[Message]] = {}

    def mutations(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        """A request that succeeded before (`Pools.templates`) with one or two of its fields, at any depth, set to
        fuzzed values: past the first checks, into the code behind them. While there is none, the fields are set
        on an empty request.

        What is drawn never depends on the pools (only what it is applied to): Hypothesis replays choices and
        refuses a strategy whose draws change with outside state."""
        cls = message_factory.GetMessageClass(descriptor)
        templates = self.pools.templates.setdefault(descriptor.full_name, [])
        paths = field_paths(descriptor)
        if not paths:
            return st.builds(cls)

        @st.composite
        def mutated(draw: st.DrawFn) -> Message:
            template = draw(_member(templates, empty=b""))
            message = cls.FromString(template)
            for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=2)):
                parent = message
                for step in path[:-1]:
                    parent = getattr(parent, step.name)
                _assign(parent, path[-1], draw(self._field(path[-1])))
            return message

        return mutated()

    def messages(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        """Messages of `descriptor`'s type, each field set or left unset."""
        name = descriptor.full_name
        if name not in self._cache:
            self._cache[name] = st.deferred(lambda: self._build(descriptor))
        return self._cache[name]

    def _build(self, descriptor: Descriptor) -> st.SearchStrategy[Message]:
        cls = message_factory.GetMessageClass(descriptor)
        special = self._well_known(descriptor.full_name, cls)
        if special is not None:
            return special
        optional = {f.name: self._field(f) for f in descriptor.fields}
        if "page_token" in optional:
            tokens = self.pools.page_tokens.setdefault(descriptor.full_name, [])
            optional["page_token"] = page_tokens(tokens) | texts()
        generic = st.fixed_dictionaries({}, optional=optional).map(lambda chosen: _message_of(cls, chosen))
        if descriptor.full_name == "kalcifer.v1.FlowGraph" and self.pools.graphs:
            return (
                generic | _member(self.pools.graphs) | st.tuples(_member(self.pools.graphs), generic).map(_merged_graph)
            )
        return generic

    def _well_known(self, name: str, cls: type[Message]) -> st.SearchStrategy[Message] | None:
        if name == "google.protobuf.Struct":
            return structs()
        if name == "google.protobuf.Value":
            return values()
        if name == "google.protobuf.ListValue":
            return st.lists(values(), max_size=4).map(lambda items: struct_pb2.ListValue(values=items))
        if name == "google.protobuf.Timestamp":
            return timestamps(cls)
        if name == "google.protobuf.FieldMask":
            return field_masks(cls)
        return None

    def _field(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            key_field, value_field = (
                descriptor.message_type.fields_by_name["key"],
                descriptor.message_type.fields_by_name["value"],
            )
            keys, items = self._single(key_field), self._single(value_field)
            return st.one_of(
                st.dictionaries(keys, items, max_size=5),
                st.tuples(items, st.sampled_from((100, 5000))).map(
                    lambda pair: (
                        dict.fromkeys((f"k{index}" for index in range(len(_repeated(pair)))), pair[0])
                        if key_field.type == FieldDescriptor.TYPE_STRING
                        else {}
                    )
                ),
            )
        single = self._single(descriptor)
        if descriptor.is_repeated:
            return st.one_of(
                st.lists(single, max_size=4),
                st.lists(single, max_size=4),
                st.tuples(single, st.sampled_from((51, 101, 1001, 5000))).map(_repeated),
            )
        return single

    def _single(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = descriptor.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            assert descriptor.message_type is not None
            return self.messages(descriptor.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            assert descriptor.enum_type is not None
            numbers = [v.number for v in descriptor.enum_type.values]
            return st.sampled_from(numbers) | _integers(32, signed=True)
        if kind == FieldDescriptor.TYPE_STRING:
            named = self._named.get(descriptor.name)
            if named is None and descriptor.name.endswith(("_id", "_ids")):
                named = self._named["id"]
            return (named | texts()) if named is not None else texts()
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(
                allow_nan=True, allow_infinity=True, width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32
            )
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
            return _integers(32, signed=True)
        if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
            return _integers(64, signed=True)
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return _integers(32, signed=False)
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return _integers(64, signed=False)
        raise AssertionError(f"no strategy for field {descriptor.full_name} of type {kind}")


def descriptor_of(cls: type[Message]) -> Descriptor:
    """The descriptor of a generated message class (typed as the pure-Python one whatever the runtime's)."""
    return cast(Descriptor, cls.DESCRIPTOR)


def _message_of(cls: type[Message], chosen: dict[str, Any]) -> Message:
    message = cls()
    for name, value in chosen.items():
        _assign(message, descriptor_of(cls).fields_by_name[name], value)
    return message


def _assign(message: Message, descriptor: FieldDescriptor, value: Any) -> None:
    """Set one field of `message` to a drawn value (replacing what it held)."""
    message.ClearField(descriptor.name)
    target = getattr(message, descriptor.name)
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        composite = descriptor.message_type.fields_by_name["value"].message_type is not None
        for key, item in value.items():
            if composite:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif descriptor.is_repeated and descriptor.message_type is not None:
        # add().CopyFrom, not extend(): extend re-parses each item, refusing the deep Structs we mean to send.
        for item in value:
            target.add().CopyFrom(item)
    elif descriptor.is_repeated:
        target.extend(value)
    elif descriptor.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, descriptor.name, value)


WELL_KNOWN = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.FieldMask",
    }
)


def field_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every field of a message and, through singular message fields, of its sub-messages (3 levels down)."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field_descriptor in descriptor.fields:
        paths.append((field_descriptor,))
        inner = field_descriptor.message_type
        if inner is not None and not field_descriptor.is_repeated and inner.full_name not in WELL_KNOWN and depth < 3:
            paths += [(field_descriptor, *rest) for rest in field_paths(inner, depth + 1)]
    return paths


def _merged_graph(pair: tuple[Message, Message]) -> Message:
    """A valid graph with fuzzed nodes and edges added: mostly valid, broken in one place."""
    valid, fuzzed = pair
    merged = type(valid)()
    merged.CopyFrom(valid)
    for name in ("nodes", "edges"):
        for item in getattr(fuzzed, name):
            getattr(merged, name).add().CopyFrom(item)
    return merged


# --- calls --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicMethod:
    """One RPC of the public API."""

    descriptor: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path(self) -> str:
        """The HTTP/2 path of the call, `/kalcifer.v1.FlowService/CreateFlow`."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def admin(self) -> bool:
        """Whether the method takes the operator admin token instead of a tenant API key."""
        return self.descriptor.containing_service.full_name in ADMIN_SERVICES

    @property
    def read_only(self) -> bool:
        """Whether the method only reads (any answer, OK included, must leave the database unchanged)."""
        return self.descriptor.name.startswith(READ_ONLY_PREFIXES)

    def __str__(self) -> str:
        return f"{self.descriptor.containing_service.name}.{self.descriptor.name}"


def public_methods(proto_dir: Path) -> list[PublicMethod]:
    """Every RPC of every service declared in `proto_dir/*.proto` (package `kalcifer.v1`), from the generated
    modules' descriptors."""
    methods: list[PublicMethod] = []
    for proto in sorted(proto_dir.glob("*.proto")):
        module = importlib.import_module(f"{PUBLIC_PACKAGE}.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods.append(
                    PublicMethod(
                        method,
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type),
                    )
                )
    return methods


@dataclass(frozen=True)
class Credentials:
    """The secrets a call may carry."""

    tenant_key: str
    admin_token: str


@dataclass(frozen=True, repr=False)
class FuzzCall:
    """One request: its body (a message, or bytes that are none), the metadata it goes with, and how to show it."""

    method: PublicMethod
    body: bytes
    metadata: tuple[tuple[str, str], ...]
    shown: Callable[[], str]

    def describe(self, limit: int = 600) -> str:
        """The request as text, cut to `limit` characters."""
        text = self.shown()
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters, {len(self.body)} bytes)"

    def __repr__(self) -> str:
        return f"FuzzCall({self.method}, {self.describe(300)}, metadata={self.metadata!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis shows a failing example's calls: the short repr, not every field."""
        printer.text(repr(self))


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def metadata_for(method: PublicMethod, credentials: Credentials) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Mostly the right credential for the method; sometimes none, a malformed one, or another kind of caller's."""
    right, wrong = (
        (credentials.admin_token, credentials.tenant_key)
        if method.admin
        else (credentials.tenant_key, credentials.admin_token)
    )
    others: tuple[tuple[tuple[str, str], ...], ...] = (
        (),
        _auth(wrong),
        _auth("kal_" + "A" * 43),
        (("authorization", "Basic YWRtaW46YWRtaW4="),),
        (("authorization", "Bearer"),),
        (("authorization", f"bearer  {right}  "),),
        (*_auth(right), *_auth(right)),
    )
    # About one call in ten carries something else than the right credential.
    return st.sampled_from((_auth(right),) * 9 * len(others) + others * 1)


def _shown_message(message: Message) -> Callable[[], str]:
    def shown() -> str:
        try:
            return text_format.MessageToString(message, as_one_line=True, print_unknown_fields=True)
        except DecodeError:  # text_format copies map entries, re-parsing what is nested deeper than it allows
            return _shown_bytes(message.SerializeToString(), "message too deep to print")()

    return shown


def _shown_bytes(body: bytes, what: str) -> Callable[[], str]:
    return lambda: f"<{what}: {len(body)} bytes {body[:64].hex()}>"


def calls(method: PublicMethod, strategies: RequestStrategies, credentials: Credentials) -> st.SearchStrategy[FuzzCall]:
    """Calls of `method`: mostly a fuzzed message (built from scratch, or a request that succeeded before with a
    field or two fuzzed), else a body that is no valid message of it (random bytes, a truncated message, a message
    with a garbage tail), each with drawn metadata."""
    descriptor = descriptor_of(method.request_class)
    messages = strategies.messages(descriptor) | strategies.mutations(descriptor)
    metadata = metadata_for(method, credentials)
    shapes = st.sampled_from(("message",) * 12 + ("bytes", "truncated", "tailed"))

    # A composite (not `builds`) so that a failing example shows each call's short repr, not how it was built.
    @st.composite
    def call(draw: st.DrawFn) -> FuzzCall:
        meta = draw(metadata)
        shape = draw(shapes)
        if shape == "bytes":
            body = draw(st.binary(max_size=64))
            return FuzzCall(method, body, meta, _shown_bytes(body, "raw body"))
        message = draw(messages)
        encoded = message.SerializeToString()
        if shape == "truncated":
            body = encoded[: int(len(encoded) * draw(st.floats(min_value=0.05, max_value=0.95)))]
            return FuzzCall(method, body, meta, _shown_bytes(body, "truncated message"))
        if shape == "tailed":
            body = encoded + draw(st.binary(min_size=1, max_size=16))
            return FuzzCall(method, body, meta, _shown_bytes(body, "message with a garbage tail"))
        return FuzzCall(method, encoded, meta, _shown_message(message))

    return call()
