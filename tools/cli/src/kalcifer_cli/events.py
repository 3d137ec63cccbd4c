"""`kalcifer events send`: one participant event, as an application would send it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from kalcifer_cli.connection import (
    DEFAULT_ADDRESS,
    AddressOption,
    ApiKeyOption,
    CliError,
    JsonOption,
    connect,
    run_request,
    stdout,
)
from kalcifer_cli.flow_files import read_data

app = typer.Typer(help="Participant events.", no_args_is_help=True)


def _data(data: str, data_file: Path | None) -> dict[str, Any]:
    if data and data_file is not None:
        raise typer.BadParameter("give --data or --data-file, not both", param_hint="--data")
    try:
        value = read_data(data_file) if data_file is not None else json.loads(data or "{}")
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--data") from None
    except CliError as error:
        raise typer.BadParameter(str(error), param_hint="--data-file") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("the event's data must be a JSON object", param_hint="--data")
    return value


@app.command("send")
def send_event(
    participant_id: Annotated[str, typer.Argument(help="Who the event is about.")],
    event_type: Annotated[str, typer.Argument(help="The event's type, e.g. signup.")],
    data: Annotated[
        str, typer.Option("--data", help='The event\'s data as a JSON object, e.g. \'{"plan": "pro"}\'.')
    ] = "",
    data_file: Annotated[
        Path | None, typer.Option("--data-file", help="The event's data from a JSON or YAML file.")
    ] = None,
    request_id: Annotated[
        str, typer.Option("--request-id", help="Idempotency key: a repeat is not applied again.")
    ] = "",
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Ingest an event: it resumes the participant's instances waiting for it and starts flows it enters."""
    payload = _data(data, data_file)

    answer = run_request(
        lambda: connect(address, api_key),
        lambda client: client.events.send(participant_id, event_type, payload, request_id=request_id),
    )
    if as_json:
        result = {
            "event_id": answer.event_id,
            "resumed": answer.resumed,
            "started": answer.started,
            "deduplicated": answer.deduplicated,
        }
        typer.echo(json.dumps(result))
        return
    repeat = " (a repeat of an earlier request_id: not applied again)" if answer.deduplicated else ""
    stdout.print(f"event {answer.event_id}: resumed {answer.resumed}, started {answer.started}{repeat}")
