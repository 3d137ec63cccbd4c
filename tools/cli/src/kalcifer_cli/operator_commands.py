"""The operator command groups, each a typer app of its own module, all talking to the API through the SDK."""

from __future__ import annotations

import typer

from kalcifer_cli import customers, events, flows, instances, tenants


def register(app: typer.Typer) -> None:
    """Add `tenants`, `keys`, `flows`, `instances`, `events` and `customers` to `app`."""
    app.add_typer(tenants.tenants_app, name="tenants")
    app.add_typer(tenants.keys_app, name="keys")
    app.add_typer(flows.app, name="flows")
    app.add_typer(instances.app, name="instances")
    app.add_typer(events.app, name="events")
    app.add_typer(customers.app, name="customers")
