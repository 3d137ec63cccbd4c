"""Progress bars of bulk commands: on stderr, so stdout carries only the results."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kalcifer_cli.connection import stderr


def bulk_progress() -> Progress:
    """A bar with done/total and elapsed time; drawn only on a terminal (a log gets the summary line instead)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=not stderr.is_terminal,
    )
