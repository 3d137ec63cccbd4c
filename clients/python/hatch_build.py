"""Builds the wheel's `kalcifer.v1` package: stubs generated from the public protos at build time.

In the uv workspace the SDK is installed editable and uses the generated package of `libs/common` (`make proto`),
so nothing is generated here then. A wheel (`uv build --package kalcifer-client --wheel` from a checkout, or from
the sdist, which carries the protos) gets its own `kalcifer/v1/*_pb2*.py(i)`, made by the generator pinned in
pyproject's [build-system], so it installs and runs without the rest of the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GenerateStubs(BuildHookInterface):  # type: ignore[type-arg]
    """Runs grpc_tools.protoc over kalcifer/v1/*.proto and adds the output to the wheel."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Generate into a temporary directory that lives until the wheel is written."""
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        proto_root = next(
            (candidate for candidate in (root / "protos", root.parent.parent / "protos") if candidate.is_dir()), None
        )
        if proto_root is None:
            raise RuntimeError("kalcifer-client: no protos/ to generate the stubs from (build from a checkout)")
        protos = sorted(str(path) for path in (proto_root / "kalcifer" / "v1").glob("*.proto"))
        self._out = tempfile.TemporaryDirectory(prefix="kalcifer-client-stubs-")
        out = self._out.name
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"--plugin=protoc-gen-mypy={_script('protoc-gen-mypy')}",
                f"--plugin=protoc-gen-mypy_grpc={_script('protoc-gen-mypy_grpc')}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out=quiet:{out}",
                f"--mypy_grpc_out=quiet:{out}",
                *protos,
            ],
            check=True,
        )
        build_data["force_include"][str(Path(out) / "kalcifer")] = "kalcifer"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """Drop the generated files once the wheel holds them."""
        out = getattr(self, "_out", None)
        if out is not None:
            out.cleanup()


def _script(name: str) -> str:
    """A console script of the build environment (beside its interpreter, which need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name
