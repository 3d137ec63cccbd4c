"""`kalcifer events send` starts a flow, `kalcifer instances inspect ID` shows its steps as a timeline (read here
as an operator reads it), `instances list` finds it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import CliResult, kalcifer
from tests.support.eventually import eventually_sync
from tests.support.processes import Suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

FLOW = {
    "name": "greeting",
    "graph": {
        "nodes": [
            {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
            {"id": "is_pro", "type": "condition", "config": {"field": "event.plan", "operator": "eq", "value": "pro"}},
            {"id": "pause", "type": "wait", "config": {"duration": "1s"}},
            {"id": "welcomed", "type": "exit", "config": {"reason": "welcomed"}},
            {"id": "skipped", "type": "exit", "config": {}},
        ],
        "edges": [
            {"source": "signup", "target": "is_pro"},
            {"source": "is_pro", "target": "pause", "branch": "true"},
            {"source": "is_pro", "target": "skipped", "branch": "false"},
            {"source": "pause", "target": "welcomed"},
        ],
    },
}


@pytest.fixture(scope="module")
def env(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tenant's CLI environment, with the greeting flow imported and active."""
    tenant = new_tenant(suite, "cli-instances")
    environment = {"KALCIFER_ADDRESS": suite.address("api"), "KALCIFER_API_KEY": tenant.key}
    source = tmp_path_factory.mktemp("flows") / "greeting.json"
    source.write_text(json.dumps(FLOW))
    kalcifer("flows", "import", source, "--activate", env=environment).ok()
    return environment


def _instance_of(env: dict[str, str], participant: str) -> dict[str, object]:
    listed = kalcifer("instances", "list", "--participant", participant, "--json", env=env).ok().json()
    assert len(listed) == 1, listed
    found: dict[str, object] = listed[0]
    return found


def test_inspect_shows_the_steps_as_a_timeline(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "signup.yaml"
    data.write_text("plan: pro\nsource: cli-test\n")
    sent = kalcifer("events", "send", "ada", "signup", "--data-file", data, env=env).ok()
    assert re.fullmatch(r"event \S+: resumed 0, started 1\n", sent.stdout), sent.stdout

    instance_id = str(_instance_of(env, "ada")["id"])
    finished = eventually_sync(
        lambda: kalcifer("instances", "inspect", instance_id, env=env).ok(),
        until=lambda result: "COMPLETED" in result.stdout.splitlines()[0],
        within=60,
        what="the instance to complete after its one-second wait",
    )

    lines = finished.stdout.splitlines()
    assert lines[0].split() == ["instance", instance_id, "COMPLETED"]
    assert "participant  ada" in finished.stdout
    assert "exit reason" not in finished.stdout
    header = lines.index("timeline: 4 steps")
    assert lines[header + 1].split() == ["at", "node", "type", "status", "took", "detail"]
    steps = [line.split() for line in lines[header + 2 :] if line.strip()]
    assert [step[1:4] for step in steps] == [
        ["signup", "event_entry", "COMPLETED"],
        ["is_pro", "condition", "COMPLETED"],
        ["pause", "wait", "COMPLETED"],
        ["welcomed", "exit", "COMPLETED"],
    ]
    assert all(step[0].startswith("+") for step in steps)  # offsets from the entry
    assert steps[1][5:7] == ["->", "true"]
    assert steps[3][5] == '{"reason":"welcomed"}'
    assert re.fullmatch(r"\d+\.\d\ds", steps[2][4]), steps[2][4]  # seconds, not ms: the wait took its second

    as_json = kalcifer("instances", "inspect", instance_id, "--json", env=env).ok().json()
    assert [step["node_id"] for step in as_json["steps"]] == ["signup", "is_pro", "pause", "welcomed"]
    assert as_json["status"] == "COMPLETED"


def test_a_waiting_instance_shows_where_it_waits(env: dict[str, str]) -> None:
    kalcifer("events", "send", "bob", "signup", "--data", '{"plan": "free"}', env=env).ok()
    instance_id = str(_instance_of(env, "bob")["id"])
    done = eventually_sync(
        lambda: kalcifer("instances", "inspect", instance_id, env=env).ok(),
        until=lambda result: "COMPLETED" in result.stdout.splitlines()[0],
        within=30,
        what="the free plan's instance to complete",
    )
    assert "-> false" in done.stdout
    assert "skipped" in done.stdout
    assert "pause" not in done.stdout


def test_an_event_with_a_request_id_is_applied_once(env: dict[str, str]) -> None:
    first = kalcifer("events", "send", "cy", "signup", "--request-id", "cy-1", "--json", env=env).ok().json()
    again = kalcifer("events", "send", "cy", "signup", "--request-id", "cy-1", "--json", env=env).ok().json()
    assert (first["started"], first["deduplicated"]) == (1, False)
    assert again["deduplicated"] is True
    assert again["event_id"] == first["event_id"]


def test_inspecting_what_is_not_there_fails_with_its_status(env: dict[str, str]) -> None:
    missing: CliResult = kalcifer("instances", "inspect", "00000000-0000-4000-8000-000000000000", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("NOT_FOUND: ")
    malformed = kalcifer("instances", "inspect", "not-an-id", env=env)
    assert malformed.returncode == 1
    assert "INVALID_ARGUMENT" in malformed.stderr
    assert "  id: " in malformed.stderr
