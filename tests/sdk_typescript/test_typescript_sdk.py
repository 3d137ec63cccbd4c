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

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
PUBLIC_PROTOS = Path(__file__).resolve().parents[2] / "protos" / "kalcifer" / "v1"
# Marks the lock file `npm ci` last installed, so one run installs once and a changed lock installs again.
INSTALLED_STAMP = SDK / "node_modules" / ".kalcifer-installed-lock"
NODE, NPM = shutil.which("node"), shutil.which("npm")

# The tests of test/suite.test.ts that must pass (not be skipped) against the suite.
SUITE_TESTS = (
    "a flow is created, activated, triggered, and its instance is read back with its steps",
    "an instance waits for its participant's event and finishes when the event is ingested",
    "a draft flow refuses a trigger with FAILED_PRECONDITION and the reason FLOW_NOT_ACTIVE",
    "an invalid graph is INVALID_ARGUMENT with one field violation per problem",
    "another tenant's or an unknown instance is NOT_FOUND naming the resource",
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
    """Run `command` in clients/typescript; fail the test with its output when it fails."""
    done = subprocess.run(command, cwd=SDK, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-6000:]}{done.stderr[-6000:]}"
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


def test_the_build_generates_every_public_proto(built_sdk: Path) -> None:
    generated = {path.name for path in (built_sdk / "src" / "gen" / "kalcifer" / "v1").glob("*_pb.js")}
    assert generated == {f"{proto.stem}_pb.js" for proto in PUBLIC_PROTOS.glob("*.proto")}
    assert (built_sdk / "src" / "gen" / "google" / "rpc" / "error_details_pb.js").exists()


def test_the_sdk_runs_a_flow_end_to_end_against_the_suite(suite: Suite, built_sdk: Path) -> None:
    assert NODE is not None
    tenant = new_tenant(suite, f"sdk-ts-{uuid.uuid4().hex[:8]}")
    test_files = sorted(str(path.relative_to(SDK)) for path in (built_sdk / "test").glob("*.test.js"))
    assert test_files, "the build produced no node tests"
    env = {**os.environ, "KALCIFER_API_ADDRESS": suite.address("api"), "KALCIFER_API_KEY": tenant.key}
    ran = subprocess.run(
        [NODE, "--test", "--test-reporter=tap", *test_files],
        cwd=SDK,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = ran.stdout + ran.stderr
    summary = _tap_summary(ran.stdout)
    assert ran.returncode == 0, report[:20000]
    assert summary.get("fail") == 0 and summary.get("cancelled") == 0, summary
    assert summary.get("skipped") == 0, f"node skipped tests although the suite was named: {summary}"
    for name in SUITE_TESTS:
        assert re.search(rf"^\s*ok \d+ - {re.escape(name)}$", ran.stdout, flags=re.MULTILINE), f"{name!r} did not pass"
    assert summary.get("pass", 0) >= len(SUITE_TESTS), summary
