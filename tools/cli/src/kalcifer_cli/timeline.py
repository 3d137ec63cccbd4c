"""An instance and its steps as a timeline people read: when each step started (from the instance's entry), what
it was, how it ended and how long it took, with its branch, error or output beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import instance_pb2
from kalcifer_client.graphs import struct_to_dict
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

_DETAIL_CHARS = 100
STEP_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "WAITING": "yellow",
    "RUNNING": "cyan",
    "SKIPPED": "dim",
    "CANCELLED": "magenta",
}
INSTANCE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "EXITED": "magenta",
    "WAITING": "yellow",
    "RUNNING": "cyan",
    "PAUSED": "yellow",
}


def instance_status(status: instance_pb2.InstanceStatus.ValueType) -> str:
    """WAITING rather than INSTANCE_STATUS_WAITING."""
    return instance_pb2.InstanceStatus.Name(status).removeprefix("INSTANCE_STATUS_")


def step_status(status: instance_pb2.StepStatus.ValueType) -> str:
    """COMPLETED rather than STEP_STATUS_COMPLETED."""
    return instance_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_")


def moment(stamp: Timestamp) -> datetime:
    """An aware UTC datetime of a Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def iso(when: datetime) -> str:
    """2026-11-30T02:00:00.123Z: milliseconds are what a timeline of runs needs."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span(delta: timedelta) -> str:
    """A duration the way people say it: 12ms, 3.40s, 5m07s, 2h05m, 3d04h."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def step_detail(step: instance_pb2.ExecutionStep) -> str:
    """What a step's row says beyond its status: its branch, its error, else its output in short."""
    if step.error:
        return step.error
    output: dict[str, Any] = struct_to_dict(step.output) if step.HasField("output") else {}
    output.pop("branch", None)
    parts = [f"-> {step.branch}"] if step.branch else []
    if output:
        text = json.dumps(output, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        parts.append(text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "...")
    return " ".join(parts)


def render_instance(
    instance: instance_pb2.FlowInstance, steps: Sequence[instance_pb2.ExecutionStep], *, now: datetime
) -> RenderableType:
    """The instance's summary, then its steps as a timeline."""
    status = instance_status(instance.status)
    entered = moment(instance.enter_time)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("instance", Text(f"{instance.id}  ").append(status, style=INSTANCE_STYLES.get(status, "")))
    summary.add_row("flow", f"{instance.flow_id}  version {instance.version_number}")
    summary.add_row("participant", instance.participant_id)
    summary.add_row("entered", iso(entered))
    if instance.HasField("end_time"):
        ended = moment(instance.end_time)
        summary.add_row("ended", f"{iso(ended)}  (after {span(ended - entered)})")
    if instance.current_nodes:
        summary.add_row("at nodes", ", ".join(instance.current_nodes))
    if instance.exit_reason:
        summary.add_row("exit reason", instance.exit_reason)

    timeline = Table(title=f"timeline: {len(steps)} steps", title_justify="left", box=None, pad_edge=False)
    for column in ("at", "node", "type", "status", "took", "detail"):
        timeline.add_column(column, no_wrap=column != "detail", justify="right" if column in ("at", "took") else "left")
    for step in steps:
        started = moment(step.start_time)
        name = step_status(step.status)
        finished = moment(step.end_time) if step.HasField("end_time") else None
        took = span(finished - started) if finished is not None else f"{span(now - started)}…"
        timeline.add_row(
            f"+{span(started - entered)}",
            step.node_id,
            step.node_type,
            Text(name, style=STEP_STYLES.get(name, "")),
            took,
            step_detail(step),
        )
    return Group(summary, Text(""), timeline)


def instance_json(instance: instance_pb2.FlowInstance, steps: Sequence[instance_pb2.ExecutionStep]) -> dict[str, Any]:
    """The same as plain data, for `--json`."""

    def when(stamp: Timestamp, present: bool) -> str | None:
        return iso(moment(stamp)) if present else None

    return {
        "id": instance.id,
        "flow_id": instance.flow_id,
        "version_number": instance.version_number,
        "participant_id": instance.participant_id,
        "status": instance_status(instance.status),
        "current_nodes": list(instance.current_nodes),
        "exit_reason": instance.exit_reason,
        "enter_time": when(instance.enter_time, instance.HasField("enter_time")),
        "end_time": when(instance.end_time, instance.HasField("end_time")),
        "steps": [
            {
                "node_id": step.node_id,
                "node_type": step.node_type,
                "status": step_status(step.status),
                "branch": step.branch,
                "error": step.error,
                "output": struct_to_dict(step.output),
                "start_time": when(step.start_time, step.HasField("start_time")),
                "end_time": when(step.end_time, step.HasField("end_time")),
            }
            for step in steps
        ],
    }
