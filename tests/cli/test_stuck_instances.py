"""`kalcifer instances stuck`: with the scheduler down (and the engine's own recovery set far off), a timer that
should have fired leaves its instance WAITING past its fire time, and a run a crash left RUNNING makes no progress;
the report lists both, stuck longest first, and forgets the first once the scheduler is back and fires it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kalcifer_client import KalciferClient
from kalcifer_common.db.models import FlowInstance
from kalcifer_common.db.session import create_engine, create_sessionmaker

from tests.support.cli import kalcifer
from tests.support.eventually import eventually_sync
from tests.support.processes import Suite, scratch_suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

FLOW = {
    "name": "one second",
    "graph": {
        "nodes": [
            {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
            {"id": "pause", "type": "wait", "config": {"duration": "1s"}},
            {"id": "done", "type": "exit", "config": {}},
        ],
        "edges": [{"source": "signup", "target": "pause"}, {"source": "pause", "target": "done"}],
    },
}
# The engine's recovery would fire the missed timer and re-run the stalled instance itself: not within this test.
FAR_OFF = {"RECOVERY_OVERDUE_SECONDS": "86400", "RECOVERY_RUNNING_SECONDS": "86400"}


@pytest.fixture(scope="module")
def stuck_suite(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with scratch_suite(servers, tmp_path_factory.mktemp("stuck-logs"), FAR_OFF) as suite:
        yield suite


async def _stalled_run(database_url: str, tenant_id: uuid.UUID, flow_id: str) -> uuid.UUID:
    """What a crash mid-run leaves: an instance committed RUNNING, untouched for an hour."""
    engine = create_engine(database_url, pool_size=1)
    instance_id = uuid.uuid4()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            session.add(
                FlowInstance(
                    id=instance_id,
                    tenant_id=tenant_id,
                    flow_id=uuid.UUID(flow_id),
                    version_number=1,
                    participant_id="crashed",
                    status="running",
                    current_nodes=["pause"],
                    enter_time=an_hour_ago,
                    update_time=an_hour_ago,
                )
            )
    finally:
        await engine.dispose()
    return instance_id


def _stuck(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = kalcifer("instances", "stuck", *args, "--json", env=env).ok().json()
    return rows


async def test_the_report_lists_overdue_waits_and_runs_without_progress(stuck_suite: Suite, tmp_path: Path) -> None:
    tenant = new_tenant(stuck_suite, "cli-stuck")
    env = {"KALCIFER_ADDRESS": stuck_suite.address("api"), "KALCIFER_API_KEY": tenant.key}
    source = tmp_path / "flow.json"
    source.write_text(json.dumps(FLOW))
    flow_id = kalcifer("flows", "import", source, "--activate", "--json", env=env).ok().json()[0]["flow_id"]
    assert kalcifer("instances", "stuck", env=env).ok().stdout.startswith("no stuck instances")

    stuck_suite.stop("scheduler")
    try:
        kalcifer("events", "send", "ada", "signup", env=env).ok()
        overdue = eventually_sync(
            lambda: _stuck(env, "--overdue", "1s"),
            until=lambda rows: len(rows) == 1,
            within=60,
            what="the unfired timer to be a second overdue",
        )
        assert (overdue[0]["reason"], overdue[0]["node_id"], overdue[0]["wait_kind"]) == (
            "WAIT_OVERDUE",
            "pause",
            "timer",
        )
        assert (overdue[0]["participant_id"], overdue[0]["status"]) == ("ada", "WAITING")
        assert overdue[0]["stuck_for_seconds"] >= 1
        assert _stuck(env) == []  # not a minute overdue yet: the default threshold says all is well

        stalled = await _stalled_run(stuck_suite.database_url, tenant.id, flow_id)
        both = _stuck(env, "--overdue", "1s", "--idle", "10m", "--flow-id", flow_id)
        # Stuck longest first: the run stalled an hour ago, the timer was due a few seconds ago.
        assert [(row["instance_id"], row["reason"]) for row in both] == [
            (str(stalled), "NO_PROGRESS"),
            (overdue[0]["instance_id"], "WAIT_OVERDUE"),
        ]
        assert [row["reason"] for row in _stuck(env, "--overdue", "1s", "--idle", "2h")] == ["WAIT_OVERDUE"]
        neighbour = new_tenant(stuck_suite, "cli-stuck-neighbour")
        neighbour_env = {**env, "KALCIFER_API_KEY": neighbour.key}
        assert _stuck(neighbour_env, "--overdue", "1s", "--idle", "10m") == []  # another tenant's are never shown
        async with KalciferClient(stuck_suite.address("api"), tenant.key) as client:
            paged = client.instances.stuck(overdue=timedelta(seconds=1), idle=timedelta(minutes=10), page_size=1)
            assert [item.instance.id async for item in paged] == [row["instance_id"] for row in both]

        report = kalcifer("instances", "stuck", "--overdue", "1s", "--idle", "10m", "--fail", env=env)
        assert report.returncode == 3
        assert str(stalled) in report.stdout
        assert overdue[0]["instance_id"] in report.stdout
        assert "2 stuck instance(s)" in report.stdout
        bad = kalcifer("instances", "stuck", "--overdue", "soon", env=env)
        assert bad.returncode == 2
        assert "--overdue" in bad.stderr
    finally:
        stuck_suite.start("scheduler")

    # The scheduler's sweep fires the missed timer: the instance completes and leaves the report.
    after = eventually_sync(
        lambda: _stuck(env, "--overdue", "1s", "--idle", "10m"),
        until=lambda rows: [row["reason"] for row in rows] == ["NO_PROGRESS"],
        within=60,
        what="the scheduler to fire the overdue timer once back",
    )
    assert after[0]["instance_id"] == str(stalled)
    inspected = kalcifer("instances", "inspect", overdue[0]["instance_id"], "--json", env=env).ok().json()
    assert inspected["status"] == "COMPLETED"
