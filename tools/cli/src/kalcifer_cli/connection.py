"""What every operator command shares: where the API is, the credential, one event loop per command, and one way
to report a failed call (a red line per problem, exit code 1)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer
from kalcifer_client import KalciferClient, KalciferError
from kalcifer_common.durations import DurationError, parse_duration
from rich.console import Console
from rich.text import Text

DEFAULT_ADDRESS = "localhost:4500"

AddressOption = Annotated[
    str, typer.Option("--address", envvar="KALCIFER_ADDRESS", help="host:port of the Kalcifer API.")
]
ApiKeyOption = Annotated[
    str, typer.Option("--api-key", envvar="KALCIFER_API_KEY", help="The tenant's raw API key.", show_default=False)
]
AdminTokenOption = Annotated[
    str,
    typer.Option("--admin-token", envvar="KALCIFER_ADMIN_TOKEN", help="The operator admin token.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

# Output for people is not wrapped at 80 columns when piped: ids, paths and timelines stay on one line each.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

_T = TypeVar("_T")


class CliError(Exception):
    """A problem the operator can fix (a missing key, an unreadable file); its message says what to do."""


def connect(address: str, credential: str, *, what: str = "--api-key or KALCIFER_API_KEY") -> KalciferClient:
    """A client of the API at `address` with `credential`; CliError when there is none."""
    if not credential:
        raise CliError(f"no credential: pass {what}")
    return KalciferClient(address, credential)


def duration_option(text: str, option: str) -> timedelta:
    """Parse a duration option ('30s', '5m', '1.5h', '2d'); a usage error (exit code 2) naming it otherwise."""
    try:
        return parse_duration(text)
    except DurationError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def run_request(opening: Callable[[], KalciferClient], request: Callable[[KalciferClient], Awaitable[_T]]) -> _T:
    """Open a client (`opening`, e.g. `lambda: connect(...)`), make one request with it and close it, as `run`
    does a command: a failed call or a CliError (a missing credential included) is reported, exit code 1."""

    async def body() -> _T:
        async with opening() as client:
            return await request(client)

    return run(body)


async def listed(items: AsyncIterable[_T]) -> list[_T]:
    """Every item of a paged listing (a request for `run_request`)."""
    return [item async for item in items]


def run(command: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run one command's coroutine in a fresh event loop; report a failed call or a CliError and exit 1."""
    try:
        return asyncio.run(command())
    except KalciferError as error:
        report_error(error)
        raise typer.Exit(1) from None
    except CliError as error:
        stderr.print(Text(str(error), style="red"))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise typer.Exit(130) from None


def report_error(error: KalciferError, *, prefix: str = "") -> None:
    """The error's code, message and reason on one red line, then each field violation on its own."""
    stderr.print(Text(f"{prefix}{error.code.name}: {error.message}", style="red"), soft_wrap=True)
    if error.reason:
        stderr.print(Text(f"  reason: {error.reason}", style="red"))
    for violation in error.violations:
        stderr.print(Text(f"  {violation.field}: {violation.description}", style="red"), soft_wrap=True)
    if error.retry_after is not None:
        stderr.print(Text(f"  retry after {error.retry_after:.3f}s", style="red"))
