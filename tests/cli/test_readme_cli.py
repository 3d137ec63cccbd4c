"""The README's CLI example, executed as written (only the API's address and the admin token are substituted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- cli:.*?-->\s*```sh\n(?P<script>.*?)```\s*<!-- /cli -->", re.DOTALL)


def test_readme_cli_example_runs_against_the_suite(suite: Suite, tmp_path: Path) -> None:
    match = BLOCK.search(README.read_text())
    assert match, "README.md has no CLI block"
    script = match.group("script").replace("localhost:4500", suite.address("api"))
    lines = [line for line in script.splitlines() if not line.startswith("export KALCIFER_ADMIN_TOKEN=")]
    # The example's one-second wait: inspect it once it has completed, as a reader would a moment later.
    runnable = "\n".join(["set -euo pipefail", *lines]).replace(
        'kalcifer instances inspect "$INSTANCE_ID"',
        'for _ in $(seq 300); do kalcifer instances inspect "$INSTANCE_ID" | head -1 | grep -q COMPLETED && break; '
        'sleep 0.1; done\nkalcifer instances inspect "$INSTANCE_ID"',
    )
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("KALCIFER_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KALCIFER_ADMIN_TOKEN": suite.admin_token,
    }
    result = subprocess.run(
        ["bash", "-c", runnable], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=False
    )

    assert result.returncode == 0, f"the CLI example failed:\n{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert "welcome.yaml: valid" in out
    assert re.search(r"event \S+: resumed 0, started 1", out)
    assert re.search(r"instance +\S+ +COMPLETED", out)
    assert re.search(r"\+\S+ +done +exit +COMPLETED .*\{\"reason\":\"welcomed\"\}", out)
    assert "no stuck instances (overdue > 1m00s, idle > 5m00s)" in out
    written, exported = (
        yaml.safe_load((tmp_path / "welcome.yaml").read_text()),
        yaml.safe_load((tmp_path / "exported.yaml").read_text()),
    )
    # The server's default re-entry policy, written out: the flow is the same wherever it is imported.
    assert exported == {**written, "re_entry": "RE_ENTRY_POLICY_AFTER_EXIT"}
