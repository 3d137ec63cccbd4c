"""`kalcifer tenants` and `keys` with the admin token, the old `create-tenant` still there, and `customers import`
of a CSV, many calls in flight."""

from __future__ import annotations

from pathlib import Path

import pytest
from kalcifer_client import KalciferClient

from tests.support.cli import kalcifer
from tests.support.eventually import eventually_sync
from tests.support.processes import Suite

pytestmark = pytest.mark.e2e


def test_an_operator_makes_a_tenant_and_manages_its_keys(suite: Suite) -> None:
    admin = {"KALCIFER_ADDRESS": suite.address("api"), "KALCIFER_ADMIN_TOKEN": suite.admin_token}
    created = kalcifer("tenants", "create", "cli-operator", "--json", env=admin).ok().json()
    assert created["raw_key"].startswith("kal_")
    listed = kalcifer("tenants", "list", "--json", env=admin).ok().json()
    assert {"id": created["tenant_id"], "name": "cli-operator"}.items() <= next(
        tenant for tenant in listed if tenant["id"] == created["tenant_id"]
    ).items()

    second = kalcifer("keys", "create", created["tenant_id"], "--name", "ci", "--json", env=admin).ok().json()
    keys = kalcifer("keys", "list", created["tenant_id"], "--json", env=admin).ok().json()
    assert sorted((key["name"], key["revoked"]) for key in keys) == [("ci", False), ("default", False)]
    assert all("raw_key" not in key for key in keys)

    as_tenant = {"KALCIFER_ADDRESS": suite.address("api"), "KALCIFER_API_KEY": second["raw_key"]}
    assert kalcifer("flows", "list", "--json", env=as_tenant).ok().json() == []
    revoked = kalcifer("keys", "revoke", second["id"], env=admin).ok()
    assert revoked.stdout.startswith(f"revoked {second['id']} (ci) at ")
    refused = eventually_sync(
        lambda: kalcifer("flows", "list", env=as_tenant),
        until=lambda result: result.returncode == 1,
        within=30,
        what="the revoked key to be refused",
    )
    assert refused.stderr.startswith("UNAUTHENTICATED: ")


def test_tenant_commands_need_the_admin_token(suite: Suite) -> None:
    missing = kalcifer("tenants", "list", env={"KALCIFER_ADDRESS": suite.address("api")})
    assert missing.returncode == 1
    assert "--admin-token or KALCIFER_ADMIN_TOKEN" in missing.stderr
    wrong = kalcifer("tenants", "list", "--address", suite.address("api"), "--admin-token", "nope")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("UNAUTHENTICATED: ")


def test_the_old_create_tenant_command_still_works(suite: Suite) -> None:
    created = (
        kalcifer(
            "create-tenant",
            "cli-legacy",
            "--api-addr",
            suite.address("api"),
            "--json",
            env={"KALCIFER_ADMIN_TOKEN": suite.admin_token},
        )
        .ok()
        .json()
    )
    assert created["raw_key"].startswith("kal_")


async def test_customers_import_from_csv(suite: Suite, tmp_path: Path) -> None:
    admin = {"KALCIFER_ADDRESS": suite.address("api"), "KALCIFER_ADMIN_TOKEN": suite.admin_token}
    key = kalcifer("tenants", "create", "cli-customers", "--json", env=admin).ok().json()["raw_key"]
    lines = ["external_id,email,timezone,tags,tier,city"]
    lines += [f"c{n:03d},c{n}@example.com,Europe/Paris,vip;beta,gold,Paris" for n in range(40)]
    lines += ["c-bad,not-an-email,,,silver,", "c-plain,,,,,"]
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("\n".join(lines) + "\n")

    result = kalcifer("customers", "import", csv_file, "--concurrency", "8", env={**admin, "KALCIFER_API_KEY": key})

    assert result.returncode == 1
    assert "imported 41 of 42 customers" in result.stdout
    assert f"{csv_file}:42 (c-bad): INVALID_ARGUMENT" in result.stderr
    async with KalciferClient(suite.address("api"), key) as client:
        stored = {customer.external_id: customer async for customer in client.customers.list(page_size=100)}
    assert len(stored) == 41
    assert "c-bad" not in stored
    first = stored["c000"]
    assert (first.email, first.timezone, sorted(first.tags)) == ("c0@example.com", "Europe/Paris", ["beta", "vip"])
    assert dict(first.attributes) == {"tier": "gold", "city": "Paris"}
    assert dict(stored["c-plain"].attributes) == {}
