"""docs/nodes.md is the node registry, rendered: regenerated here and compared, so it never drifts from the code."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kalcifer_engine.catalogue import render_catalogue
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.registry import NodeRegistry, builtin_registry
from kalcifer_engine.nodes.schema import NON_EMPTY_STRING, object_schema

NODES_MD = Path(__file__).resolve().parents[2] / "docs" / "nodes.md"


class _Stamp(NodeType):
    """A plugin-like node type, to show a registry's extra types reach the catalogue."""

    key = "stamp"
    category = NodeCategory.ACTION
    description = "Stamp the participant | with a mark."
    config_schema = object_schema(
        description,
        {"mark": {**NON_EMPTY_STRING, "maxLength": 8, "description": "The mark."}},
        required=["mark"],
    )

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        return ("stamped", "refused")


def test_docs_nodes_md_is_the_catalogue_of_the_registry() -> None:
    expected = render_catalogue(builtin_registry())
    assert NODES_MD.is_file(), "docs/nodes.md is missing: run `make docs`"
    assert NODES_MD.read_text() == expected, "docs/nodes.md is out of date with the node registry: run `make docs`"


def test_every_node_type_and_config_field_has_its_entry() -> None:
    registry = builtin_registry()
    catalogue = render_catalogue(registry)
    sections = catalogue.split("\n### ")[1:]
    assert [section.split("`")[1] for section in sections] == [
        node.key for category in NodeCategory for node in registry.all() if node.category == category
    ]
    for section in sections:
        node = registry.get(section.split("`")[1])
        assert node is not None
        assert node.description in section
        for field in node.config_schema["properties"]:
            assert f"| `{field}` |" in section, f"{node.key}: config field {field!r} is not in the catalogue"


def test_a_registered_type_is_catalogued_with_its_branches_and_constraints() -> None:
    catalogue = render_catalogue(NodeRegistry([*builtin_registry().all(), _Stamp()]))

    assert "| [`stamp`](#stamp) | action | `stamped`, `refused` | Stamp the participant \\| with a mark. |" in catalogue
    assert "| `mark` | string | yes | 1 to 8 characters | The mark. |" in catalogue
    assert "The 24 node types" in catalogue
