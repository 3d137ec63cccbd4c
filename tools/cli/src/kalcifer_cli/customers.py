"""`kalcifer customers import`: customer profiles from a CSV file, many calls in flight, with a progress bar.

The header names the columns: `external_id` (required), `email`, `phone`, `timezone`, `tags` (separated by `;`);
every other column is an attribute, kept as text (`customer.attributes.<column>`). Empty cells are left out.
"""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from kalcifer_client import KalciferClient, KalciferError
from rich.text import Text

from kalcifer_cli.connection import (
    DEFAULT_ADDRESS,
    AddressOption,
    ApiKeyOption,
    CliError,
    JsonOption,
    connect,
    run,
    stderr,
    stdout,
)
from kalcifer_cli.progress import bulk_progress

app = typer.Typer(help="Customers (the marketing layer's participants).", no_args_is_help=True)

PROFILE_COLUMNS = ("external_id", "email", "phone", "timezone", "tags")


@dataclass(frozen=True)
class CustomerRow:
    """One CSV line, parsed."""

    line: int
    external_id: str
    email: str = ""
    phone: str = ""
    timezone: str = ""
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


def read_customers(path: Path) -> list[CustomerRow]:
    """Every data line of the CSV; CliError for a missing file, header or external_id."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "external_id" not in reader.fieldnames:
                raise CliError(f"{path}: the header must name an external_id column")
            rows: list[CustomerRow] = []
            for record in reader:
                line = reader.line_num
                cells = {key: (value or "").strip() for key, value in record.items() if key is not None}
                if not cells.get("external_id"):
                    raise CliError(f"{path}:{line}: external_id is empty")
                rows.append(
                    CustomerRow(
                        line=line,
                        external_id=cells["external_id"],
                        email=cells.get("email", ""),
                        phone=cells.get("phone", ""),
                        timezone=cells.get("timezone", ""),
                        tags=tuple(tag.strip() for tag in cells.get("tags", "").split(";") if tag.strip()),
                        attributes={k: v for k, v in cells.items() if k not in PROFILE_COLUMNS and v},
                    )
                )
    except OSError as error:
        raise CliError(f"{path}: {error.strerror or error}") from None
    except csv.Error as error:
        raise CliError(f"{path}: not valid CSV: {error}") from None
    return rows


@app.command("import")
def import_customers(
    path: Annotated[Path, typer.Argument(help="A CSV file with a header line (external_id, email, ...).")],
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Calls in flight at once.")] = 8,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = "",
) -> None:
    """Create or update one customer per CSV line. A line the API refuses is reported and the rest go on; the
    exit code is 1 if any was refused. Rate limits are waited out (the SDK honours RetryInfo)."""
    rows = read_customers_or_exit(path)

    async def body() -> list[tuple[CustomerRow, KalciferError]]:
        failures: list[tuple[CustomerRow, KalciferError]] = []
        queue: asyncio.Queue[CustomerRow] = asyncio.Queue()
        for row in rows:
            queue.put_nowait(row)
        async with connect(address, api_key) as client:
            with bulk_progress() as progress:
                task = progress.add_task("importing customers", total=len(rows))

                async def worker() -> None:
                    while not queue.empty():
                        row = queue.get_nowait()
                        try:
                            await _upsert(client, row)
                        except KalciferError as error:
                            failures.append((row, error))
                        progress.advance(task)

                async with asyncio.TaskGroup() as group:
                    for _ in range(min(concurrency, len(rows)) or 1):
                        group.create_task(worker())
        return sorted(failures, key=lambda failure: failure[0].line)

    failures = run(body)
    for row, error in failures:
        stderr.print(Text(f"{path}:{row.line} ({row.external_id}): {error}", style="red"), soft_wrap=True)
    imported = len(rows) - len(failures)
    if as_json:
        refused = [{"line": row.line, "external_id": row.external_id, "error": str(error)} for row, error in failures]
        typer.echo(json.dumps({"imported": imported, "failed": refused}))
    else:
        stdout.print(f"imported {imported} of {len(rows)} customers")
    if failures:
        raise typer.Exit(1)


def read_customers_or_exit(path: Path) -> list[CustomerRow]:
    """`read_customers`, a CliError reported as one red line and exit code 1."""
    try:
        return read_customers(path)
    except CliError as error:
        stderr.print(Text(str(error), style="red"))
        raise typer.Exit(1) from None


async def _upsert(client: KalciferClient, row: CustomerRow) -> None:
    await client.customers.upsert(
        row.external_id,
        attributes=row.attributes,
        email=row.email,
        phone=row.phone,
        timezone=row.timezone,
        tags=row.tags,
    )
