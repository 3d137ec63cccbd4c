"""Flow files: what `kalcifer flows export` writes and `flows import` / `flows validate` read, in JSON or YAML.

    name: welcome                       # required
    description: Greets new sign-ups    # optional
    re_entry: RE_ENTRY_POLICY_NEVER     # optional, a kalcifer.v1.ReEntryPolicy name
    graph:                              # required: SPEC 5's graph
      nodes: [{id: signup, type: event_entry, config: {event_type: signup}}, ...]
      edges: [{source: signup, target: mail}, ...]

No ids, versions or times: a file describes a flow, so exporting it from one tenant and importing it into another
gives the same graph, and exporting that again gives the same file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kalcifer.v1 import common_pb2

from kalcifer_cli.connection import CliError

FLOW_FILE_SUFFIXES = (".json", ".yaml", ".yml")
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _JsonValuesLoader(yaml.SafeLoader):
    """YAML with JSON's values only: an unquoted time (`datetime: 2026-12-01T09:00:00+01:00` in a `wait_until`)
    stays the text it was written as, which is what a node's config holds, not a datetime no Struct can carry."""


_JsonValuesLoader.yaml_implicit_resolvers = {
    first: [resolver for resolver in resolvers if resolver[0] != _YAML_TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_KEYS = ("name", "description", "re_entry", "graph")


@dataclass(frozen=True)
class FlowDocument:
    """A flow as a file holds it."""

    name: str
    graph: dict[str, Any]
    description: str = ""
    re_entry: str = ""  # a ReEntryPolicy name; "" = the server's default

    def re_entry_value(self) -> common_pb2.ReEntryPolicy.ValueType:
        """The policy as the proto enum (UNSPECIFIED when not given)."""
        return (
            common_pb2.ReEntryPolicy.Value(self.re_entry) if self.re_entry else common_pb2.RE_ENTRY_POLICY_UNSPECIFIED
        )

    def to_data(self) -> dict[str, Any]:
        """The file's content, keys in a fixed order."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        if self.re_entry:
            data["re_entry"] = self.re_entry
        data["graph"] = self.graph
        return data


def read_data(path: Path) -> Any:
    """The JSON or YAML value in `path` (by suffix; YAML when unknown, since JSON is YAML)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"{path}: {error.strerror or error}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_JsonValuesLoader)  # noqa: S506 - a SafeLoader with one resolver less
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise CliError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}") from None


def parse_document(data: Any, source: str) -> FlowDocument:
    """A FlowDocument from a file's value; CliError naming what is missing or malformed."""
    if not isinstance(data, Mapping):
        raise CliError(f"{source}: a flow file holds an object with `name` and `graph`")
    if unknown := sorted(str(key) for key in data if key not in _KEYS):
        raise CliError(f"{source}: unknown keys {', '.join(unknown)} (a flow file has {', '.join(_KEYS)})")
    name, graph = data.get("name"), data.get("graph")
    if not isinstance(name, str) or not name.strip():
        raise CliError(f"{source}: `name` must be a non-empty string")
    if not isinstance(graph, Mapping):
        raise CliError(f"{source}: `graph` must be an object with `nodes` and `edges`")
    description, re_entry = data.get("description") or "", data.get("re_entry") or ""
    if not isinstance(description, str):
        raise CliError(f"{source}: `description` must be a string")
    if re_entry and re_entry not in common_pb2.ReEntryPolicy.keys():  # noqa: SIM118 - an EnumTypeWrapper, not a dict
        raise CliError(f"{source}: `re_entry` must be one of {', '.join(common_pb2.ReEntryPolicy.keys())}")
    return FlowDocument(name=name, graph=dict(graph), description=description, re_entry=re_entry)


def read_document(path: Path) -> FlowDocument:
    """The flow in one file."""
    return parse_document(read_data(path), str(path))


def read_graph(path: Path) -> dict[str, Any]:
    """The graph in a file: a flow file's `graph`, or a bare graph (`nodes` and `edges` at the top)."""
    data = read_data(path)
    if isinstance(data, Mapping) and isinstance(data.get("graph"), Mapping):
        return dict(data["graph"])
    if isinstance(data, Mapping) and "nodes" in data:
        return dict(data)
    raise CliError(f"{path}: no graph (a flow file with `graph`, or an object with `nodes` and `edges`)")


def flow_files(path: Path) -> list[Path]:
    """`path` itself, or the flow files (.json, .yaml, .yml) directly in a directory, sorted by name."""
    if path.is_dir():
        return sorted(child for child in path.iterdir() if child.suffix.lower() in FLOW_FILE_SUFFIXES)
    if not path.exists():
        raise CliError(f"{path}: no such file or directory")
    return [path]


def dump_document(document: FlowDocument, fmt: str) -> str:
    """The file's text in `fmt` ("json" or "yaml")."""
    data = document.to_data()
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    dumped: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return dumped
