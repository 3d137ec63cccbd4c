"""The TypeScript SDK (clients/typescript) end to end: npm installs its toolchain, `npm run build` generates it from
protos/ and compiles it, and node's test runner drives the running suite with it (a flow created, activated,
triggered, its instance and steps read back; typed errors with their `google.rpc` details).

Skipped, saying why, where node or npm is missing: the Python suite must still pass on a machine without Node.js.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.processes import Suite
from tests.support.tenants import new_tenant

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "typescript"
PUBLIC_PROTOS = ROOT / "protos" / "kalcifer" / "v1"
README_EXAMPLE = re.compile(
    r"<!-- typescript-sdk:.*?-->\s*```ts\n(?P<code>.*?)```\s*<!-- /typescript-sdk -->", re.DOTALL
)
# Marks the lock file `npm ci` last installed, so one run installs once and a changed lock installs again.
INSTALLED_STAMP = SDK / "node_modules" / ".kalcifer-installed-lock"
NODE, NPM = shutil.which("node"), shutil.which("npm")

# The tests of test/suite.test.ts that must pass (not be skipped) against the suite.
SUITE_TESTS = (
    "a flow is created, activated, triggered, and its instance is read back with its steps",
    "an instance waits for its participant's event and finishes when the event is ingested",
    "a draft flow refuses a trigger with FAILED_PRECONDITION and the reason FLOW_NOT_ACTIVE",
    "an invalid graph is INVALID_ARGUMENT with one field violation per problem",
    "an unknown instance is NOT_FOUND naming the resource",
    "a wrong API key is UNAUTHENTICATED",
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NODE is None or NPM is None,
        reason="the TypeScript SDK tests (clients/typescript) need node and npm (Node.js 20+) on PATH",
    ),
    # A cold `npm ci` on a loaded machine, then the build and the node tests: more than one ordinary test.
    pytest.mark.timeout(900),
]


def _run(*command: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` in clients/typescript; fail the test with (the start of) its output when it fails."""
    done = subprocess.run(command, cwd=SDK, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    output = (done.stdout + done.stderr)[:20000]
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}\n{output}"
    return done


@pytest.fixture(scope="module")
def built_sdk() -> Path:
    """clients/typescript installed (`npm ci`, only when the lock file changed since the last install) and built."""
    assert NPM is not None
    lock_digest = hashlib.sha256((SDK / "package-lock.json").read_bytes()).hexdigest()
    if not INSTALLED_STAMP.exists() or INSTALLED_STAMP.read_text() != lock_digest:
        _run(NPM, "ci", "--no-audit", "--no-fund", timeout=600)
        INSTALLED_STAMP.write_text(lock_digest)
    _run(NPM, "run", "build", timeout=300)
    return SDK / "dist"


def _tap_summary(output: str) -> dict[str, int]:
    """The closing counts of node's TAP reporter (`# pass 7`, `# fail 0`, ...)."""
    return {name: int(count) for name, count in re.findall(r"^# (\w+) (\d+)$", output, flags=re.MULTILINE)}


def test_the_build_generates_and_exports_every_public_proto(built_sdk: Path) -> None:
    expected = {f"{proto.stem}_pb.js" for proto in PUBLIC_PROTOS.glob("*.proto")}
    generated = {path.name for path in (built_sdk / "src" / "gen" / "kalcifer" / "v1").glob("*_pb.js")}
    assert generated == expected
    assert (built_sdk / "src" / "gen" / "google" / "rpc" / "error_details_pb.js").exists()
    index = (SDK / "src" / "index.ts").read_text()
    assert [name for name in sorted(expected) if f'"./gen/kalcifer/v1/{name}"' not in index] == []


def test_the_sdk_runs_a_flow_end_to_end_against_the_suite(suite: Suite, built_sdk: Path) -> None:
    assert NODE is not None
    tenant = new_tenant(suite, f"sdk-ts-{uuid.uuid4().hex[:8]}")
    test_files = sorted(str(path.relative_to(SDK)) for path in (built_sdk / "test").glob("*.test.js"))
    assert test_files, "the build produced no node tests"
    env = {**os.environ, "KALCIFER_API_ADDRESS": suite.address("api"), "KALCIFER_API_KEY": tenant.key}
    ran = _run(NODE, "--test", "--test-reporter=tap", *test_files, timeout=300, env=env)
    summary = _tap_summary(ran.stdout)
    assert summary.get("fail") == 0, summary
    assert summary.get("cancelled") == 0, summary
    assert summary.get("skipped") == 0, f"node skipped tests although the suite was named: {summary}"
    assert "# SKIP" not in ran.stdout, "a group of node tests was skipped (see its reason in the TAP output)"
    for name in SUITE_TESTS:
        assert re.search(rf"^\s*ok \d+ - {re.escape(name)}$", ran.stdout, flags=re.MULTILINE), f"{name!r} did not pass"
    assert summary.get("pass", 0) >= len(SUITE_TESTS), summary


def test_the_readme_example_type_checks_and_runs_against_the_suite(suite: Suite, built_sdk: Path) -> None:
    """The README's example, as written: TypeScript that tsc accepts against the built package, and JavaScript
    that node runs (it imports the package by its name, so it is written inside the package, under dist/)."""
    assert NODE is not None
    found = README_EXAMPLE.search((ROOT / "README.md").read_text())
    assert found, "the README has no typescript-sdk block"
    (built_sdk / "readme-example.mts").write_text(found["code"])
    (built_sdk / "readme-example.mjs").write_text(found["code"])
    tsc = str(SDK / "node_modules" / "typescript" / "bin" / "tsc")
    strict = ("--strict", "--noEmit", "--skipLibCheck", "--module", "nodenext", "--target", "es2022", "--types", "node")
    _run(NODE, tsc, *strict, str(built_sdk / "readme-example.mts"), timeout=120)

    tenant = new_tenant(suite, f"sdk-ts-readme-{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "KALCIFER_API_ADDRESS": suite.address("api"), "KALCIFER_API_KEY": tenant.key}
    ran = _run(NODE, str(built_sdk / "readme-example.mjs"), timeout=60, env=env)
    assert ran.stdout.splitlines() == [
        "COMPLETED [ 'entry', 'greet' ] { result: 'hello Ada' }",
        "FailedPrecondition FLOW_NOT_ACTIVE",
    ], ran.stdout
