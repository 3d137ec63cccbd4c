"""The real `kalcifer` entry point (the console script beside this interpreter) as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import BIN

KALCIFER = BIN / "kalcifer"


@dataclass(frozen=True)
class CliResult:
    """What one run of the CLI printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as JSON (for `--json`)."""
        return json.loads(self.stdout)

    def ok(self) -> CliResult:
        """Itself, after asserting the command succeeded (its stderr in the failure message otherwise)."""
        assert self.returncode == 0, f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return self


def kalcifer(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120.0) -> CliResult:
    """Run `kalcifer ARGS...` with `env` on top of this process's environment (KALCIFER_* unset first)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("KALCIFER_")}
    done = subprocess.run(
        [str(KALCIFER), *map(str, args)],
        env={**base, "LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)
