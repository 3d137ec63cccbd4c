"""Spans a service wrote with `OTEL_TRACES_EXPORTER=console`: one JSON object per line among its logs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Span:
    """The parts of an exported span the tests look at (ids as the SDK prints them: `0x` + hex)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each span this one links to


def spans_in(log: str) -> list[Span]:
    """Every span line of a service's log, in the order they ended."""
    found: list[Span] = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        context = record.get("context") if isinstance(record, dict) else None
        if not isinstance(context, dict) or "trace_id" not in context:
            continue
        found.append(
            Span(
                name=record["name"],
                kind=record["kind"],
                trace_id=context["trace_id"],
                span_id=context["span_id"],
                parent_id=record.get("parent_id"),
                attributes=record.get("attributes") or {},
                links=tuple(
                    (link["context"]["trace_id"], link["context"]["span_id"]) for link in record.get("links") or ()
                ),
            )
        )
    return found
