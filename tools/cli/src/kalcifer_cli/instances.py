"""`kalcifer instances ...`: inspect one instance as a timeline, list instances, report stuck ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from kalcifer.v1 import instance_pb2
from rich.table import Table

from kalcifer_cli.connection import (
    DEFAULT_ADDRESS,
    AddressOption,
    ApiKeyOption,
    JsonOption,
    connect,
    duration_option,
    listed,
    run,
    run_request,
    stdout,
)
from kalcifer_cli.timeline import instance_json, instance_status, iso, moment, render_instance, span

app = typer.Typer(help="Flow instances: inspect, list, stuck.", no_args_is_help=True)

Steps = list[instance_pb2.ExecutionStep]


@app.command("inspect")
def inspect_instance(
    instance_id: Annotated[str, typer.Argument(help="The instance's id.")],
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """The instance (status, flow, participant, times) and its steps as a timeline."""

    async def body() -> tuple[instance_pb2.FlowInstance, Steps]:
        async with connect(address, api_key) as client:
            instance = await client.instances.get(instance_id)
            steps = [step async for step in client.instances.steps(instance_id, page_size=1000)]
        return instance, steps

    instance, steps = run(body)
    if as_json:
        typer.echo(json.dumps(instance_json(instance, steps)))
        return
    stdout.print(render_instance(instance, steps, now=datetime.now(UTC)))


@app.command("list")
def list_instances(
    flow_id: Annotated[str, typer.Option("--flow-id", help="Only this flow's instances.")] = "",
    status: Annotated[
        str, typer.Option("--status", help="running, waiting, paused, completed, failed or exited.")
    ] = "",
    participant: Annotated[str, typer.Option("--participant", help="Only this participant's instances.")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Instances newest first."""
    wanted = instance_pb2.INSTANCE_STATUS_UNSPECIFIED
    if status:
        try:
            wanted = instance_pb2.InstanceStatus.Value(f"INSTANCE_STATUS_{status.upper()}")
        except ValueError:
            raise typer.BadParameter("not an instance status", param_hint="--status") from None

    async def body() -> list[instance_pb2.FlowInstance]:
        found: list[instance_pb2.FlowInstance] = []
        async with connect(address, api_key) as client:
            listing = client.instances.list(
                flow_id=flow_id, status=wanted, participant_id=participant, page_size=min(limit, 1000)
            )
            async for instance in listing:
                found.append(instance)
                if len(found) >= limit:
                    break
        return found

    found = run(body)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in instance_json(i, []).items() if k != "steps"} for i in found]))
        return
    table = Table("id", "flow", "participant", "status", "entered", "at nodes", box=None)
    for instance in found:
        table.add_row(
            instance.id,
            instance.flow_id,
            instance.participant_id,
            instance_status(instance.status),
            iso(moment(instance.enter_time)),
            ", ".join(instance.current_nodes),
        )
    stdout.print(table)


@app.command("stuck")
def stuck_instances(
    overdue_text: Annotated[
        str, typer.Option("--overdue", help="A WAITING instance whose wait is this far past its fire time (30s, 5m).")
    ] = "60s",
    idle_text: Annotated[
        str, typer.Option("--idle", help="A RUNNING instance without progress for this long (5m, 1h).")
    ] = "5m",
    flow_id: Annotated[str, typer.Option("--flow-id", help="Only this flow's instances.")] = "",
    fail: Annotated[bool, typer.Option("--fail", help="Exit with code 3 when any instance is stuck.")] = False,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Instances waiting past their wait's fire time by more than --overdue, or running without progress for more
    than --idle, stuck longest first. Recovery normally fixes both; what is listed here needs a look."""
    overdue, idle = duration_option(overdue_text, "--overdue"), duration_option(idle_text, "--idle")

    found = run_request(
        lambda: connect(address, api_key),
        lambda client: listed(client.instances.stuck(flow_id=flow_id, overdue=overdue, idle=idle, page_size=500)),
    )
    now = datetime.now(UTC)
    if as_json:
        rows = [
            {
                "instance_id": s.instance.id,
                "flow_id": s.instance.flow_id,
                "participant_id": s.instance.participant_id,
                "status": instance_status(s.instance.status),
                "reason": instance_pb2.StuckReason.Name(s.reason).removeprefix("STUCK_REASON_"),
                "since": iso(moment(s.since)),
                "stuck_for_seconds": round((now - moment(s.since)).total_seconds(), 3),
                "wait_id": s.wait_id,
                "node_id": s.node_id,
                "wait_kind": s.wait_kind,
            }
            for s in found
        ]
        typer.echo(json.dumps(rows))
    elif not found:
        stdout.print(f"no stuck instances (overdue > {span(overdue)}, idle > {span(idle)})")
    else:
        table = Table("instance", "flow", "participant", "reason", "stuck for", "since", "node", "wait", box=None)
        for s in found:
            table.add_row(
                s.instance.id,
                s.instance.flow_id,
                s.instance.participant_id,
                instance_pb2.StuckReason.Name(s.reason).removeprefix("STUCK_REASON_"),
                span(now - moment(s.since)),
                iso(moment(s.since)),
                s.node_id or ", ".join(s.instance.current_nodes),
                s.wait_kind,
            )
        stdout.print(table)
        stdout.print(f"{len(found)} stuck instance(s)")
    if fail and found:
        raise typer.Exit(3)
