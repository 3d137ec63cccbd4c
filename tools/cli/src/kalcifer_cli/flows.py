"""`kalcifer flows ...`: flows to and from JSON or YAML files, validation and activation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from kalcifer.v1 import common_pb2, flow_pb2
from kalcifer_client import KalciferClient, KalciferError, graph_to_dict
from rich.table import Table
from rich.text import Text

from kalcifer_cli.connection import (
    DEFAULT_ADDRESS,
    AddressOption,
    ApiKeyOption,
    CliError,
    JsonOption,
    connect,
    listed,
    report_error,
    run,
    run_request,
    stderr,
    stdout,
)
from kalcifer_cli.flow_files import FlowDocument, dump_document, flow_files, read_document, read_graph
from kalcifer_cli.progress import bulk_progress

app = typer.Typer(help="Flows: import, export, validate, activate, list.", no_args_is_help=True)


def status_name(status: flow_pb2.FlowStatus.ValueType) -> str:
    """ACTIVE rather than FLOW_STATUS_ACTIVE."""
    return flow_pb2.FlowStatus.Name(status).removeprefix("FLOW_STATUS_")


@app.command("import")
def import_flows(
    path: Annotated[Path, typer.Argument(help="A flow file (.json, .yaml, .yml) or a directory of them.")],
    activate: Annotated[bool, typer.Option("--activate", help="Activate each flow once imported.")] = False,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Create one flow per file (version 1 holds its graph); a directory's files go in name order with a
    progress bar. A file that fails is reported and the rest go on; the exit code is 1 if any failed."""

    async def body() -> list[dict[str, Any]]:
        files = flow_files(path)
        results: list[dict[str, Any]] = []
        async with connect(address, api_key) as client:
            with bulk_progress() as progress:
                task = progress.add_task("importing flows", total=len(files))
                for file in files:
                    results.append(await _import_one(client, file, activate=activate))
                    progress.advance(task)
        return results

    results = run(body)
    imported = [result for result in results if "flow_id" in result]
    if as_json:
        typer.echo(json.dumps(results))
    else:
        for result in imported:
            stdout.print(f"{result['file']}: {result['name']} -> {result['flow_id']} ({result['status']})")
        stdout.print(f"imported {len(imported)} of {len(results)} flow files")
    if len(imported) < len(results):
        raise typer.Exit(1)


async def _import_one(client: KalciferClient, file: Path, *, activate: bool) -> dict[str, Any]:
    try:
        document = read_document(file)
        flow = await client.flows.create(
            document.name, description=document.description, graph=document.graph, re_entry=document.re_entry_value()
        )
        if activate:
            flow = await client.flows.activate(flow.id)
    except KalciferError as error:
        report_error(error, prefix=f"{file}: ")
        return {"file": str(file), "error": error.message, "code": error.code.name}
    except (CliError, ValueError) as error:
        stderr.print(Text(str(error) if isinstance(error, CliError) else f"{file}: {error}", style="red"))
        return {"file": str(file), "error": str(error)}
    return {"file": str(file), "name": flow.name, "flow_id": flow.id, "status": status_name(flow.status)}


@app.command("export")
def export_flow(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    version: Annotated[
        int, typer.Option("--version", help="Version number (default: the active one, else the newest).")
    ] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="yaml or json (default: from the output's suffix, else yaml).")
    ] = "",
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Write a flow (name, description, re-entry policy, graph) as a file `kalcifer flows import` reads."""
    chosen = fmt or ("json" if output is not None and output.suffix.lower() == ".json" else "yaml")
    if chosen not in ("json", "yaml"):
        raise typer.BadParameter("must be yaml or json", param_hint="--format")

    async def body() -> FlowDocument:
        async with connect(address, api_key) as client:
            flow = await client.flows.get(flow_id)
            number = version or flow.active_version_number or flow.latest_version_number
            if not number:
                raise CliError(f"flow {flow_id} has no version to export")
            flow_version = await client.flows.get_version(flow_id, number)
        re_entry = (
            ""
            if flow.re_entry == common_pb2.RE_ENTRY_POLICY_UNSPECIFIED
            else common_pb2.ReEntryPolicy.Name(flow.re_entry)
        )
        return FlowDocument(
            name=flow.name, description=flow.description, re_entry=re_entry, graph=graph_to_dict(flow_version.graph)
        )

    text = dump_document(run(body), chosen)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        stderr.print(f"wrote {output}")


@app.command("validate")
def validate_flows(
    paths: Annotated[list[Path], typer.Argument(help="Flow files, bare graph files, or directories of them.")],
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Ask the API to validate each graph (nothing is stored); prints every problem, exit code 1 if any."""

    async def body() -> int:
        invalid = 0
        async with connect(address, api_key) as client:
            for file in [file for path in paths for file in flow_files(path)]:
                answer = await client.flows.validate(read_graph(file))
                if answer.valid:
                    stdout.print(f"{file}: valid")
                    continue
                invalid += 1
                stdout.print(Text(f"{file}: {len(answer.violations)} problem(s)", style="red"))
                for violation in answer.violations:
                    where = violation.field or violation.node_id or violation.edge_id
                    stdout.print(Text(f"  {where}: {violation.description}", style="red"), soft_wrap=True)
        return invalid

    if run(body):
        raise typer.Exit(1)


@app.command("activate")
def activate_flow(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Publish the flow's newest draft version and make it ACTIVE."""

    flow = run_request(lambda: connect(address, api_key), lambda client: client.flows.activate(flow_id))
    stdout.print(f"{flow.id} {status_name(flow.status)} (version {flow.active_version_number})")


@app.command("list")
def list_flows(
    status: Annotated[str, typer.Option("--status", help="draft, active, paused or archived.")] = "",
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """The tenant's flows."""
    wanted = flow_pb2.FLOW_STATUS_UNSPECIFIED
    if status:
        try:
            wanted = flow_pb2.FlowStatus.Value(f"FLOW_STATUS_{status.upper()}")
        except ValueError:
            raise typer.BadParameter("must be draft, active, paused or archived", param_hint="--status") from None

    flows = run_request(
        lambda: connect(address, api_key),
        lambda client: listed(client.flows.list(status=wanted, page_size=200)),
    )
    if as_json:
        rows = [
            {"id": f.id, "name": f.name, "status": status_name(f.status), "active_version": f.active_version_number}
            for f in flows
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "name", "status", "active version", box=None)
    for flow in flows:
        table.add_row(flow.id, flow.name, status_name(flow.status), str(flow.active_version_number or "-"))
    stdout.print(table)
