"""`kalcifer flows ...` through the real entry point: a flow exported from one tenant and imported into another
has an identical graph; directories import with a summary; validation lists every problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import kalcifer
from tests.support.processes import Suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

FLOW_YAML = """\
name: onboarding
description: New sign-ups get a welcome, pro ones a call a day later
re_entry: RE_ENTRY_POLICY_NEVER
graph:
  nodes:
    - id: signup
      type: event_entry
      config: {event_type: signup, filter: "event.plan != 'test'"}
      position: {x: 0, y: 0}
    - id: is_pro
      type: condition
      config: {field: plan, operator: in, value: [pro, team]}
      position: {x: 200, y: 0}
    - id: a_day
      type: wait
      config: {duration: 1d}
    - id: split
      type: ab_split
      config:
        variants: [{key: a, weight: 50}, {key: b, weight: 50.5}]
    - id: tag_a
      type: add_tag
      config: {tag: variant-a}
    - id: tag_b
      type: add_tag
      config: {tag: variant-b}
    - id: done
      type: exit
      config: {reason: onboarded}
  edges:
    - {id: e1, source: signup, target: is_pro}
    - {source: is_pro, target: a_day, branch: "true"}
    - {source: is_pro, target: done, branch: "false"}
    - {source: a_day, target: split}
    - {source: split, target: tag_a, branch: a}
    - {source: split, target: tag_b, branch: b}
"""

BROKEN_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "pause", "type": "wait", "config": {"duration": "30"}},
        {"id": "mystery", "type": "no_such_type", "config": {}},
    ],
    "edges": [{"source": "signup", "target": "pause"}],
}


@pytest.fixture(scope="module")
def two_tenants(suite: Suite) -> tuple[dict[str, str], dict[str, str]]:
    """CLI environments of two tenants of the suite's API."""
    first, second = new_tenant(suite, "cli-flows-a"), new_tenant(suite, "cli-flows-b")
    address = suite.address("api")
    return (
        {"KALCIFER_ADDRESS": address, "KALCIFER_API_KEY": first.key},
        {"KALCIFER_ADDRESS": address, "KALCIFER_API_KEY": second.key},
    )


def test_export_then_import_into_another_tenant_gives_an_identical_graph(
    two_tenants: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    tenant_a, tenant_b = two_tenants
    source = tmp_path / "onboarding.yaml"
    source.write_text(FLOW_YAML)

    imported = kalcifer("flows", "import", source, "--activate", "--json", env=tenant_a).ok().json()
    assert [(item["name"], item["status"]) for item in imported] == [("onboarding", "ACTIVE")]
    exported_a = tmp_path / "from-a.yaml"
    kalcifer("flows", "export", imported[0]["flow_id"], "--output", exported_a, env=tenant_a).ok()

    into_b = kalcifer("flows", "import", exported_a, "--json", env=tenant_b).ok().json()
    assert into_b[0]["flow_id"] != imported[0]["flow_id"]
    exported_b = kalcifer("flows", "export", into_b[0]["flow_id"], env=tenant_b).ok().stdout

    assert exported_b == exported_a.read_text()
    original, round_tripped = yaml.safe_load(FLOW_YAML), yaml.safe_load(exported_b)
    assert round_tripped == original
    # JSON carries the same flow.
    as_json = kalcifer("flows", "export", into_b[0]["flow_id"], "--format", "json", env=tenant_b).ok().json()
    assert as_json == original
    # The other tenant cannot see it.
    refused = kalcifer("flows", "export", into_b[0]["flow_id"], env=tenant_a)
    assert refused.returncode == 1
    assert "NOT_FOUND" in refused.stderr


def test_a_directory_imports_file_by_file_and_reports_the_ones_that_fail(
    two_tenants: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    _, tenant_b = two_tenants
    flows = tmp_path / "flows"
    flows.mkdir()
    graph = yaml.safe_load(FLOW_YAML)["graph"]
    for number in range(3):
        (flows / f"bulk-{number}.yaml").write_text(yaml.safe_dump({"name": f"bulk {number}", "graph": graph}))
    (flows / "bulk-3.json").write_text(json.dumps({"name": "bulk 3", "graph": graph}))
    (flows / "bulk-4.json").write_text(json.dumps({"name": "bulk broken", "graph": BROKEN_GRAPH}))
    (flows / "notes.txt").write_text("not a flow")

    result = kalcifer("flows", "import", flows, env=tenant_b)

    assert result.returncode == 1
    assert "imported 4 of 5 flow files" in result.stdout
    assert "bulk-4.json" in result.stderr
    assert "INVALID_ARGUMENT" in result.stderr
    listed = kalcifer("flows", "list", "--status", "draft", "--json", env=tenant_b).ok().json()
    assert {"bulk 0", "bulk 1", "bulk 2", "bulk 3"} <= {flow["name"] for flow in listed}
    assert "bulk broken" not in {flow["name"] for flow in listed}


def test_validate_names_every_problem_and_fails(
    two_tenants: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    tenant_a, _ = two_tenants
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.json"
    good.write_text(FLOW_YAML)
    bad.write_text(json.dumps(BROKEN_GRAPH))

    result = kalcifer("flows", "validate", good, bad, env=tenant_a)

    assert result.returncode == 1
    assert f"{good}: valid" in result.stdout
    problems = result.stdout.split(f"{bad}: ", 1)[1]
    assert "problem(s)" in problems.splitlines()[0]
    assert "nodes[1].config.duration" in problems
    assert "nodes[2]" in problems
    assert kalcifer("flows", "validate", good, env=tenant_a).ok().stdout.strip() == f"{good}: valid"


def test_activate_publishes_an_imported_draft(
    two_tenants: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    tenant_a, _ = two_tenants
    source = tmp_path / "draft.yaml"
    source.write_text(FLOW_YAML.replace("name: onboarding", "name: to activate"))
    imported = kalcifer("flows", "import", source, "--json", env=tenant_a).ok().json()
    assert imported[0]["status"] == "DRAFT"

    activated = kalcifer("flows", "activate", imported[0]["flow_id"], env=tenant_a).ok()

    assert activated.stdout.strip() == f"{imported[0]['flow_id']} ACTIVE (version 1)"


def test_a_file_that_is_no_flow_is_refused_before_any_call(
    two_tenants: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    tenant_a, _ = two_tenants
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: typo\ngrpah: {nodes: [], edges: []}\n")
    result = kalcifer("flows", "import", typo, env=tenant_a)
    assert result.returncode == 1
    assert "unknown keys grpah" in result.stderr
    no_key = kalcifer("flows", "list", env={"KALCIFER_ADDRESS": tenant_a["KALCIFER_ADDRESS"]})
    assert no_key.returncode == 1
    assert "--api-key or KALCIFER_API_KEY" in no_key.stderr
