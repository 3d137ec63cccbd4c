"""The README's SDK example, executed as written against the suite (address and key from the environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import Suite
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- sdk:.*?-->\s*```python\n(?P<script>.*?)```\s*<!-- /sdk -->", re.DOTALL)


def test_readme_sdk_example_runs_against_the_suite(suite: Suite) -> None:
    match = BLOCK.search(README.read_text())
    assert match, "README.md has no SDK block"
    env = {
        **os.environ,
        "KALCIFER_ADDRESS": suite.address("api"),
        "KALCIFER_API_KEY": new_tenant(suite, "readme-sdk").key,
    }
    result = subprocess.run(
        [sys.executable, "-c", match.group("script")], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, f"the SDK example failed:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[:2] == ["refused: FLOW_NOT_ACTIVE", "ada True"]
    assert lines[2:] in (["signup event_entry", "done exit"], ["signup event_entry"], [])
