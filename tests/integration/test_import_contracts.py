"""The architecture contracts `make lint` checks (import-linter, `[tool.importlinter]` in pyproject.toml) are
live: on a copy of the source tree they hold, and one forbidden import in the copy makes `lint-imports` fail
naming the broken contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = {
    "kalcifer_common": ROOT / "libs/common/src/kalcifer_common",
    "kalcifer_api": ROOT / "services/api/src/kalcifer_api",
    "kalcifer_engine": ROOT / "services/engine/src/kalcifer_engine",
    "kalcifer_scheduler": ROOT / "services/scheduler/src/kalcifer_scheduler",
    "kalcifer_cli": ROOT / "tools/cli/src/kalcifer_cli",
    "kalcifer_client": ROOT / "clients/python/src/kalcifer_client",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The six packages and the project's contracts, copied where an edit cannot touch the real tree."""
    for name, source in PACKAGES.items():
        shutil.copytree(source, tmp_path / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _add_import(tree: Path, module: str, statement: str) -> None:
    path = tree / "src" / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}\n")


def test_the_contracts_hold_on_the_tree_as_it_is(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("kalcifer_api.repo.flows", "import kalcifer_engine.runtime", "services never import each other"),
        ("kalcifer_common.errors", "import kalcifer_api.app", "libs/common imports no service"),
        (
            "kalcifer_api.repo.flows",
            "from kalcifer_api.engine_client import EngineClient",
            "api: grpc sits on the engine/scheduler clients, which sit on repo, then domain",
        ),
        (
            "kalcifer_engine.domain.graph",
            "import kalcifer_engine.repo.instances",
            "engine: grpc sits on runtime, which sits on domain",
        ),
        (
            "kalcifer_engine.repo.waits",
            "from kalcifer_engine.runtime.run import Effects",
            "engine: grpc sits on runtime, which sits on domain",
        ),
        (
            "kalcifer_engine.grpc.runtime_rpcs",
            "from sqlalchemy.ext.asyncio import AsyncConnection",
            "engine servicers use no database library",
        ),
        ("kalcifer_engine.grpc.registry_rpcs", "import asyncpg", "engine servicers use no database library"),
    ],
)
def test_one_forbidden_import_breaks_its_contract(tree: Path, module: str, statement: str, contract: str) -> None:
    _add_import(tree, module, statement)
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout
