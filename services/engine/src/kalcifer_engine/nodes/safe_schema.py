"""Tenant JSON Schemas (webhook node types, SPEC 6.7 and 10): a subset that validates in bounded time.

A tenant's schema runs inside the engine on every graph validation, so it is untrusted code in a small language.
What the full language allows and this subset refuses, at registration, in milliseconds:

- regular expressions Python's backtracking engine can take exponential time on (`"^(a+)+$"`): every `pattern`
  and `patternProperties` key must compile under RE2, which matches in linear time, and RE2 is what matches them
  (`schema.py`); so a pattern RE2 cannot express (backreferences, lookaround) is refused;
- references that recurse (`"$ref": "#"` inside itself) or point outside the schema, and the keywords that make
  reference resolution dynamic (`$id`, `$anchor`, `$dynamicRef`, ...);
- reference fan-out: a schema of a few kilobytes whose references, expanded, make millions of subschemas;
- nesting deeper than `MAX_DEPTH` and the `unevaluated*` keywords (their evaluation revisits every subschema).

Size is bounded where the schema arrives (`MAX_SCHEMA_BYTES`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import unquote

from kalcifer_engine.nodes.patterns import pattern_problem

MAX_DEPTH: Final = 32
MAX_EXPANDED_SUBSCHEMAS: Final = 5_000
MAX_PATTERN_LENGTH: Final = 1_000
MAX_REFERENCES: Final = 200

REFUSED_KEYWORDS: Final = {
    "$id": "identifiers make references resolve elsewhere; use '$defs' and '#/$defs/...' references",
    "id": "identifiers make references resolve elsewhere; use '$defs' and '#/$defs/...' references",
    "$anchor": "anchors are not supported; use '#/$defs/...' references",
    "$dynamicRef": "dynamic references are not supported; use '$ref'",
    "$dynamicAnchor": "dynamic anchors are not supported",
    "$recursiveRef": "recursive references are not supported",
    "$recursiveAnchor": "recursive anchors are not supported",
    "$vocabulary": "custom vocabularies are not supported",
    "unevaluatedProperties": "is not supported (its cost grows with every subschema); use 'additionalProperties'",
    "unevaluatedItems": "is not supported (its cost grows with every subschema); use 'items'",
}
# Keywords whose value is a subschema, a map of subschemas, or a list of subschemas (draft 2020-12 and 7).
_ONE: Final = frozenset(
    {"items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"}
)
_MAP: Final = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why `schema` is outside the safe subset (empty when it is inside)."""
    problems: list[str] = []
    refs: dict[str, str] = {}  # location of each subschema that makes a reference -> its `$ref`
    for location, subschema, depth in _subschemas(schema):
        if depth > MAX_DEPTH:
            return [f"nests subschemas {depth} deep at {_shown(location)}; at most {MAX_DEPTH}"]
        for keyword, why in REFUSED_KEYWORDS.items():
            if keyword in subschema:
                problems.append(f"{_shown(location)}: '{keyword}' {why}")
        patterns = [subschema["pattern"]] if isinstance(subschema.get("pattern"), str) else []
        if isinstance(subschema.get("patternProperties"), Mapping):
            patterns.extend(str(key) for key in subschema["patternProperties"])
        for pattern in patterns:
            if len(pattern) > MAX_PATTERN_LENGTH:
                problems.append(f"{_shown(location)}: a pattern may have at most {MAX_PATTERN_LENGTH} characters")
            elif (problem := pattern_problem(pattern)) is not None:
                problems.append(f"{_shown(location)}: pattern {pattern!r} {problem}")
        ref = subschema.get("$ref")
        if isinstance(ref, str):
            refs[location] = ref
    if problems:
        return problems
    if len(refs) > MAX_REFERENCES:
        return [f"makes more than {MAX_REFERENCES} $ref references"]
    return _reference_problems(schema, refs)


def _subschemas(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], int]]:
    """Every subschema with its JSON pointer and depth, iteratively (a deep schema cannot exhaust the stack)."""
    pending: list[tuple[str, Any, int]] = [("#", schema, 0)]
    while pending:
        location, node, depth = pending.pop()
        if not isinstance(node, Mapping):
            continue  # booleans are schemas too, and trivial
        yield location, node, depth
        if depth > MAX_DEPTH:
            return
        for keyword, value in node.items():
            here = f"{location}/{_escape(str(keyword))}"
            if keyword in _ONE:
                pending.append((here, value, depth + 1))
            elif keyword in _MAP and isinstance(value, Mapping):
                pending.extend((f"{here}/{_escape(str(k))}", v, depth + 1) for k, v in value.items())
            elif keyword in _LIST and isinstance(value, list):
                pending.extend((f"{here}/{i}", v, depth + 1) for i, v in enumerate(value))


def _reference_problems(schema: Mapping[str, Any], refs: Mapping[str, str]) -> list[str]:
    """Every `$ref` is a local JSON pointer to a subschema, none recurses, and expansion stays bounded."""
    problems: list[str] = []
    targets: dict[str, str] = {}  # location of each reference -> the location it points at
    for location, ref in refs.items():
        if not ref.startswith("#"):
            problems.append(f"{_shown(location)}: $ref {ref!r} must point inside the schema (start with '#')")
        elif (target := _canonical(ref)) is None or _resolve(schema, target) is None:
            problems.append(f"{_shown(location)}: $ref {ref!r} points at nothing")
        else:
            targets[location] = target
    if problems:
        return problems
    # A reference recurses when its target contains (itself, or through further references) the reference.
    memo: dict[str, int] = {}

    def expanded(location: str, trail: tuple[str, ...]) -> int | str:
        """Subschemas under `location` with references inlined, or the cycle found."""
        if location in trail:
            return " -> ".join((*trail[trail.index(location) :], location))
        if location in memo:
            return memo[location]
        total = 1
        for inner, target in targets.items():
            if inner == location or inner.startswith(location + "/"):
                size = expanded(target, (*trail, location))
                if isinstance(size, str):
                    return size
                total += size + (inner != location)
                if total > MAX_EXPANDED_SUBSCHEMAS:
                    return total
        memo[location] = total
        return total

    result = expanded("#", ())
    if isinstance(result, str):
        return [f"$ref recurses ({result}); recursive schemas are not supported"]
    if result > MAX_EXPANDED_SUBSCHEMAS:
        return [f"expands to over {MAX_EXPANDED_SUBSCHEMAS} subschemas once its references are followed"]
    return []


def _canonical(ref: str) -> str | None:
    """`ref` as a location in `_subschemas`' spelling (percent-decoded, then escaped again), None if malformed."""
    if ref in ("#", "#/"):
        return "#"
    if not ref.startswith("#/"):
        return None
    parts = [unquote(part).replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]
    return "#" + "".join("/" + _escape(part) for part in parts)


def _resolve(schema: Mapping[str, Any], location: str) -> Any:
    node: Any = schema
    for part in location[2:].split("/") if location != "#" else []:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node if isinstance(node, Mapping | bool) else None


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _shown(location: str) -> str:
    return location if len(location) <= 80 else location[:79] + "…"
