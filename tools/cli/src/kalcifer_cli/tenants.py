"""`kalcifer tenants ...` and `kalcifer keys ...`: the operator's TenantService, with the admin token."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import tenant_pb2
from kalcifer_client import KalciferClient
from rich.table import Table

from kalcifer_cli.connection import (
    DEFAULT_ADDRESS,
    AddressOption,
    AdminTokenOption,
    JsonOption,
    connect,
    listed,
    run_request,
    stdout,
)
from kalcifer_cli.timeline import iso, moment

tenants_app = typer.Typer(help="Tenants (with the operator admin token).", no_args_is_help=True)
keys_app = typer.Typer(help="Tenants' API keys (with the operator admin token).", no_args_is_help=True)


def _admin(address: str, admin_token: str) -> KalciferClient:
    return connect(address, admin_token, what="--admin-token or KALCIFER_ADMIN_TOKEN")


def _when(stamp: Timestamp) -> str:
    return iso(moment(stamp)) if stamp.seconds or stamp.nanos else ""


def _key_data(key: tenant_pb2.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "revoked": key.revoked,
        "create_time": _when(key.create_time),
        "revoke_time": _when(key.revoke_time),
    }


@tenants_app.command("create")
def create_tenant(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """Create a tenant and its first API key; prints the raw key, which is shown only once."""

    created = run_request(lambda: _admin(address, admin_token), lambda client: client.tenants.create(name))
    if as_json:
        data = {"tenant_id": created.tenant.id, "name": created.tenant.name, "api_key_id": created.api_key.id}
        typer.echo(json.dumps({**data, "raw_key": created.raw_key}))
        return
    stdout.print(f"tenant id:  {created.tenant.id}")
    stdout.print(f"api key id: {created.api_key.id}")
    stdout.print(f"raw key:    {created.raw_key}   (shown once; Kalcifer stores only its hash)")


@tenants_app.command("list")
def list_tenants(
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """Every tenant."""

    tenants = run_request(
        lambda: _admin(address, admin_token),
        lambda client: listed(client.tenants.list(page_size=500)),
    )
    if as_json:
        rows = [{"id": t.id, "name": t.name, "create_time": _when(t.create_time)} for t in tenants]
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "name", "created", box=None)
    for tenant in tenants:
        table.add_row(tenant.id, tenant.name, _when(tenant.create_time))
    stdout.print(table)


@tenants_app.command("get")
def get_tenant(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """One tenant."""

    tenant = run_request(lambda: _admin(address, admin_token), lambda client: client.tenants.get(tenant_id))
    stdout.print(f"{tenant.id}  {tenant.name}  created {_when(tenant.create_time)}")


@keys_app.command("create")
def create_key(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    name: Annotated[str, typer.Option("--name", help="A name for the key.")] = "cli",
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """Create an API key for a tenant; prints the raw key, which is shown only once."""

    created = run_request(
        lambda: _admin(address, admin_token),
        lambda client: client.tenants.create_key(tenant_id, name),
    )
    if as_json:
        typer.echo(json.dumps({**_key_data(created.api_key), "raw_key": created.raw_key}))
        return
    stdout.print(f"api key id: {created.api_key.id}")
    stdout.print(f"raw key:    {created.raw_key}   (shown once; Kalcifer stores only its hash)")


@keys_app.command("list")
def list_keys(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """A tenant's API keys (prefixes only: raw keys are never shown again)."""

    keys = run_request(
        lambda: _admin(address, admin_token),
        lambda client: listed(client.tenants.list_keys(tenant_id, page_size=500)),
    )
    if as_json:
        typer.echo(json.dumps([_key_data(key) for key in keys]))
        return
    table = Table("id", "name", "prefix", "created", "revoked", box=None)
    for key in keys:
        table.add_row(key.id, key.name, key.key_prefix, _when(key.create_time), _when(key.revoke_time) or "-")
    stdout.print(table)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The API key's id.")],
    address: AddressOption = DEFAULT_ADDRESS,
    admin_token: AdminTokenOption = "",
) -> None:
    """Revoke an API key (refused on every API replica within API_KEY_CACHE_SECONDS)."""

    key = run_request(lambda: _admin(address, admin_token), lambda client: client.tenants.revoke_key(key_id))
    stdout.print(f"revoked {key.id} ({key.name}) at {_when(key.revoke_time)}")
