"""The README's grpcurl examples (the quickstart, channels, templates and deliveries, analytics), executed as
written (only the address and credentials are substituted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- quickstart:.*?-->\s*```sh\n(?P<script>.*?)```\s*<!-- /quickstart -->", re.DOTALL)
DELIVERIES = re.compile(r"<!-- deliveries:.*?-->\s*```sh\n(?P<script>.*?)```\s*<!-- /deliveries -->", re.DOTALL)
ANALYTICS = re.compile(r"<!-- analytics:.*?-->\s*```sh\n(?P<script>.*?)```\s*<!-- /analytics -->", re.DOTALL)


def quickstart_script(block: re.Pattern[str] = BLOCK) -> str:
    """A block of the README (the quickstart by default)."""
    match = block.search(README.read_text())
    assert match, f"README.md has no block {block.pattern[:20]!r}"
    return match.group("script")


def _run(suite: Suite, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    runnable = "set -euo pipefail\n" + script.replace("localhost:4500", suite.address("api"))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, env=environment, timeout=120)


def test_readme_quickstart_runs_against_the_suite(suite: Suite) -> None:
    script = quickstart_script()
    assert "localhost:4500" in script
    lines = [line for line in script.splitlines() if not line.startswith("export KALCIFER_ADMIN_TOKEN=")]
    result = _run(suite, "\n".join(lines), KALCIFER_ADMIN_TOKEN=suite.admin_token)
    assert result.returncode == 0, f"quickstart failed:\n{result.stdout}\n{result.stderr}"
    assert "kalcifer.v1.TenantService" in result.stdout
    assert '"status": "SERVING"' in result.stdout


def test_readme_channels_templates_and_deliveries_run_against_the_suite(suite: Suite) -> None:
    api_key = new_tenant(suite, "readme-deliveries").key
    result = _run(suite, quickstart_script(DELIVERIES), API_KEY=api_key)
    assert result.returncode == 0, f"the deliveries example failed:\n{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert '"secret_settings": [\n    "secret"\n  ]' in out
    assert "a-long-random-signing-secret" not in out, "a secret is never answered"
    assert '"subject": "Welcome, Ada"' in out
    assert '"body": "Hello Ada, enjoy your pro plan."' in out
    assert '"status": "DELIVERY_STATUS_DELIVERED"' in out
    assert "refused: statuses only move forward" in out
    assert "Code: FailedPrecondition" in result.stderr
    assert "INVALID_TRANSITION" in result.stderr


def _answers(out: str) -> list[Any]:
    """Every JSON document grpcurl printed, in order."""
    decoder, answers, at = json.JSONDecoder(), [], 0
    while (at := out.find("{", at)) != -1:
        answer, at = decoder.raw_decode(out, at)
        answers.append(answer)
    return answers


def test_readme_analytics_runs_against_the_suite(suite: Suite) -> None:
    api_key = new_tenant(suite, "readme-analytics").key
    result = _run(suite, quickstart_script(ANALYTICS), API_KEY=api_key)
    assert result.returncode == 0, f"the analytics example failed:\n{result.stdout}\n{result.stderr}"
    *started, summary, ab = _answers(result.stdout)
    assert [sorted(answer) for answer in started[-3:]] == [["instance_id"]] * 3, "three participants entered"
    assert summary == {"entered": "3", "waiting": "3"}
    assert ab["node_id"] == "split"
    assert [variant["key"] for variant in ab["variants"]] == ["a", "b"]
    assert sum(int(variant.get("participants", "0")) for variant in ab["variants"]) == 3
