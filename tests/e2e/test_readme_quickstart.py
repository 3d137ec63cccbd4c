"""The README's grpcurl quickstart, executed as written (only the address and token are substituted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- quickstart:.*?-->\s*```sh\n(?P<script>.*?)```\s*<!-- /quickstart -->", re.DOTALL)


def quickstart_script() -> str:
    """The quickstart block of the README."""
    match = BLOCK.search(README.read_text())
    assert match, "README.md has no quickstart block"
    return match.group("script")


def test_readme_quickstart_runs_against_the_suite(suite: Suite) -> None:
    script = quickstart_script()
    assert "localhost:4500" in script
    lines = [line for line in script.splitlines() if not line.startswith("export KALCIFER_ADMIN_TOKEN=")]
    runnable = "set -euo pipefail\n" + "\n".join(lines).replace("localhost:4500", suite.address("api"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KALCIFER_ADMIN_TOKEN": suite.admin_token,
    }
    result = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"quickstart failed:\n{result.stdout}\n{result.stderr}"
    assert "kalcifer.v1.TenantService" in result.stdout
    assert '"status": "SERVING"' in result.stdout
