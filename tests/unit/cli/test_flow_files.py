"""Flow files as `kalcifer flows` reads and writes them: JSON's values only, unknown keys refused, and a written
file read back gives the same flow."""

from __future__ import annotations

from pathlib import Path

import pytest
from kalcifer_cli.connection import CliError
from kalcifer_cli.flow_files import FlowDocument, dump_document, parse_document, read_data, read_document, read_graph

GRAPH = {
    "nodes": [
        {"id": "start", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "later", "type": "wait_until", "config": {"datetime": "2026-12-01T09:00:00+01:00"}},
    ],
    "edges": [{"source": "start", "target": "later"}],
}


def test_unquoted_times_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("a: 2026-12-01T09:00:00+01:00\nb: 2026-01-01\nc: 3\nd: true\n")
    assert read_data(path) == {"a": "2026-12-01T09:00:00+01:00", "b": "2026-01-01", "c": 3, "d": True}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_written_flow_reads_back_the_same(tmp_path: Path, fmt: str) -> None:
    document = FlowDocument(name="later", graph=GRAPH, description="d", re_entry="RE_ENTRY_POLICY_NEVER")
    path = tmp_path / f"flow.{fmt}"
    path.write_text(dump_document(document, fmt))
    assert read_document(path) == document
    assert read_graph(path) == GRAPH


def test_a_bare_graph_validates_but_is_no_flow(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text('{"nodes": [], "edges": []}')
    assert read_graph(path) == {"nodes": [], "edges": []}
    with pytest.raises(CliError, match="unknown keys edges, nodes"):
        read_document(path)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "holds an object"),
        ({"name": "x", "graph": {}, "grpah": {}}, "unknown keys grpah"),
        ({"name": "", "graph": {}}, "`name` must be"),
        ({"name": "x", "graph": []}, "`graph` must be an object"),
        ({"name": "x", "graph": {}, "re_entry": "SOMETIMES"}, "`re_entry` must be one of"),
    ],
)
def test_malformed_files_say_what_is_wrong(data: object, problem: str) -> None:
    with pytest.raises(CliError, match=problem):
        parse_document(data, "f.yaml")


def test_a_file_that_does_not_parse_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{nodes: ")
    with pytest.raises(CliError, match=r"broken.json: not valid JSON"):
        read_data(path)
