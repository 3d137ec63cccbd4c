"""Judging a chaos run from what the database and the local endpoints recorded (no I/O).

Every figure is counted per phase: the instances the driver started after a fault (and before the next) belong to
that fault's phase. What makes the run fail: an instance lost (the driver started it, the database has none), one
participant started twice, an instance not in the state its graph dictates (status, path, branch, call answer), a
step run twice, a delivery made twice or never sent (or sent and never received by the tenant's provider
endpoint), a webhook call made again under a new key, an event the API
acknowledged that was lost or never routed, a wait left pending, or a start the API never acknowledged. Calls and
sends repeated under the same idempotency key are counted but allowed: that is how a crash mid-call is recovered.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tests.chaos.flows import CALL_ANSWER, ChaosFlow, FlowKind, Visit

COMPLETED = "completed"
SENT = "sent"


@dataclass(frozen=True)
class Started:
    """A participant the driver started in a flow, in the phase it started in; `acknowledged` once the API said so."""

    participant_id: str
    kind: FlowKind
    phase: int
    acknowledged: bool


@dataclass(frozen=True)
class InstanceRow:
    """One row of `flow_instances`."""

    id: str
    kind: FlowKind | None
    participant_id: str
    status: str


@dataclass(frozen=True)
class StepRow:
    """One row of `execution_steps` (`branch` from its output)."""

    instance_id: str
    node_id: str
    status: str
    branch: str | None
    output: Any


@dataclass(frozen=True)
class DeliveryRow:
    """One row of `deliveries`."""

    instance_id: str | None
    node_id: str
    status: str
    idempotency_key: str


@dataclass(frozen=True)
class CallRequest:
    """One request the webhook endpoint received: the instance its path names, its `Idempotency-Key`, when."""

    instance_id: str
    idempotency_key: str
    at: float = 0.0


@dataclass(frozen=True)
class Send:
    """One delivery the tenant's provider endpoint received: its `Idempotency-Key`, when."""

    idempotency_key: str
    at: float = 0.0


@dataclass(frozen=True)
class Recovered:
    """A count a service logged of work it picked up after a fault (`what`), when."""

    what: str
    count: int
    at: float


@dataclass(frozen=True)
class EventRow:
    """One stored event: its request id and whether it was routed."""

    request_id: str | None
    routed: bool


@dataclass
class Observed:
    """Everything recorded at the end of a run."""

    instances: Sequence[InstanceRow]
    steps: Sequence[StepRow]
    deliveries: Sequence[DeliveryRow]
    calls: Sequence[CallRequest]
    # Every delivery the provider endpoint received (a repeat of a key is a send made again).
    sends: Sequence[Send]
    events: Sequence[EventRow]
    pending_waits: int
    # Request ids of the events the driver ingested, and of those the API acknowledged.
    events_sent: frozenset[str] = frozenset()
    events_acknowledged: frozenset[str] = frozenset()


@dataclass
class Figures:
    """Counts of one phase (or of the whole run). The `BAD` ones must all be 0."""

    started: int = 0
    unacknowledged: int = 0
    completed: int = 0
    lost: int = 0
    duplicate_instances: int = 0
    wrong_state: int = 0
    duplicate_steps: int = 0
    deliveries: int = 0
    duplicate_deliveries: int = 0
    unsent_deliveries: int = 0
    sends_repeated: int = 0
    calls: int = 0
    calls_repeated: int = 0
    calls_new_key: int = 0

    BAD = (
        "unacknowledged",
        "lost",
        "duplicate_instances",
        "wrong_state",
        "duplicate_steps",
        "duplicate_deliveries",
        "unsent_deliveries",
        "calls_new_key",
    )

    def add(self, other: Figures) -> None:
        """Add another phase's counts."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    @property
    def failures(self) -> dict[str, int]:
        """The counts that must be 0 and are not."""
        return {name: getattr(self, name) for name in self.BAD if getattr(self, name)}


@dataclass
class EventFigures:
    """The events the driver ingested: sent, acknowledged, stored, lost (acknowledged, not stored), unrouted."""

    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    unrouted: int = 0


@dataclass
class Verdict:
    """Figures per phase and in total, the events', waits left pending, and what was wrong, instance by instance."""

    phases: dict[int, Figures]
    total: Figures
    events: EventFigures
    pending_waits: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was lost, duplicated, stuck or wrong."""
        return not self.total.failures and not self.events.lost and not self.events.unrouted and not self.pending_waits


def _path_problem(flow: ChaosFlow, status: str, steps: Sequence[StepRow]) -> str | None:
    """Why an instance is not in the state its graph dictates (None when it is); repeated visits are judged apart."""
    if status != COMPLETED:
        return f"status {status}"
    odd = sorted({f"{s.node_id}:{s.status}" for s in steps if s.status != COMPLETED})
    if odd:
        return f"steps not completed: {', '.join(odd)}"
    taken = {Visit(s.node_id, s.branch if s.branch else None) for s in steps}
    if taken != set(flow.path):
        expected = ", ".join(_visit(v) for v in flow.path)
        return f"path {', '.join(sorted(_visit(v) for v in taken))} instead of {expected}"
    if flow.call_node is not None:
        outputs = [s.output for s in steps if s.node_id == flow.call_node]
        if any(output != CALL_ANSWER for output in outputs):
            return f"call step output {outputs!r}, not the answer {CALL_ANSWER!r}"
    return None


def _visit(visit: Visit) -> str:
    return visit.node_id if visit.branch is None else f"{visit.node_id}[{visit.branch}]"


def _repeats(counts: Iterable[int]) -> int:
    return sum(count - 1 for count in counts if count > 1)


def judge(flows: Mapping[FlowKind, ChaosFlow], started: Sequence[Started], observed: Observed) -> Verdict:
    """Count, per phase, what the run did and what went wrong."""
    phases: dict[int, Figures] = defaultdict(Figures)
    problems: list[str] = []
    phase_of: dict[tuple[FlowKind, str], int] = {}
    for entry in started:
        phase_of[(entry.kind, entry.participant_id)] = entry.phase
        figures = phases[entry.phase]
        figures.started += 1
        figures.unacknowledged += 0 if entry.acknowledged else 1
        if not entry.acknowledged:
            problems.append(f"{entry.kind} {entry.participant_id}: start never acknowledged")

    instances_of: dict[tuple[FlowKind, str], list[InstanceRow]] = defaultdict(list)
    for instance in observed.instances:
        if instance.kind is not None:
            instances_of[(instance.kind, instance.participant_id)].append(instance)
    steps_of: dict[str, list[StepRow]] = defaultdict(list)
    for step in observed.steps:
        steps_of[step.instance_id].append(step)
    deliveries_of: dict[str, list[DeliveryRow]] = defaultdict(list)
    key_owner: dict[str, str] = {}
    for delivery in observed.deliveries:
        if delivery.instance_id is not None:
            deliveries_of[delivery.instance_id].append(delivery)
            key_owner[delivery.idempotency_key] = delivery.instance_id
    calls_of: dict[str, list[str]] = defaultdict(list)
    for request in observed.calls:
        calls_of[request.instance_id].append(request.idempotency_key)
    sends_of: dict[str, list[str]] = defaultdict(list)
    for send in observed.sends:
        sends_of[key_owner.get(send.idempotency_key, "")].append(send.idempotency_key)
    if sends_of.get(""):
        problems.append(f"{len(sends_of[''])} send(s) received under keys of no delivery")

    for (kind, participant), phase in phase_of.items():
        figures = phases[phase]
        flow = flows[kind]
        rows = instances_of.get((kind, participant), [])
        if not rows:
            figures.lost += 1
            problems.append(f"{kind} {participant}: lost (no instance)")
            continue
        if len(rows) > 1:
            figures.duplicate_instances += len(rows) - 1
            problems.append(f"{kind} {participant}: {len(rows)} instances")
        for instance in rows:
            steps = steps_of.get(instance.id, [])
            repeated = _repeats(Counter(s.node_id for s in steps).values())
            if repeated:
                figures.duplicate_steps += repeated
                problems.append(f"{kind} {instance.id}: {repeated} step(s) run twice")
            problem = _path_problem(flow, instance.status, steps)
            if problem is None:
                figures.completed += 1
            else:
                figures.wrong_state += 1
                problems.append(f"{kind} {instance.id}: {problem}")
            deliveries = deliveries_of.get(instance.id, [])
            per_node = Counter(d.node_id for d in deliveries)
            duplicated = _repeats(per_node.values())
            sent_nodes = {d.node_id for d in deliveries if d.status == SENT}
            unsent = [node for node in flow.delivery_nodes if node not in sent_nodes]
            unsent += [d.node_id for d in deliveries if d.node_id not in flow.delivery_nodes]
            received = set(sends_of.get(instance.id, []))
            unsent += [
                f"{d.node_id} (never received)"
                for d in deliveries
                if d.status == SENT and d.idempotency_key not in received
            ]
            figures.deliveries += len(deliveries)
            figures.duplicate_deliveries += duplicated
            figures.unsent_deliveries += len(unsent)
            if unsent or duplicated:
                problems.append(f"{kind} {instance.id}: deliveries {dict(per_node)}, not sent {unsent}")
            sends = Counter(sends_of.get(instance.id, []))
            figures.sends_repeated += _repeats(sends.values())
            keys = Counter(calls_of.get(instance.id, []))
            figures.calls += len(keys)
            figures.calls_repeated += _repeats(keys.values())
            expected_keys = 1 if flow.call_node is not None else 0
            if len(keys) != expected_keys:
                figures.calls_new_key += max(len(keys) - expected_keys, 0)
                problems.append(f"{kind} {instance.id}: calls under {len(keys)} keys, expected {expected_keys}")

    known = {row.request_id: row for row in observed.events if row.request_id is not None}
    events = EventFigures(
        sent=len(observed.events_sent),
        acknowledged=len(observed.events_acknowledged),
        stored=sum(1 for request_id in observed.events_sent if request_id in known),
        lost=sum(1 for request_id in observed.events_acknowledged if request_id not in known),
        unrouted=sum(1 for request_id in observed.events_sent if request_id in known and not known[request_id].routed),
    )
    if events.lost or events.unrouted:
        problems.append(f"events: {events.lost} acknowledged and lost, {events.unrouted} stored and never routed")
    if observed.pending_waits:
        problems.append(f"{observed.pending_waits} wait(s) still pending")
    total = Figures()
    for figures in phases.values():
        total.add(figures)
    return Verdict(dict(sorted(phases.items())), total, events, observed.pending_waits, problems)


@dataclass
class Redone:
    """Work a fault interrupted that the suite picked up again, counted in the phase it was picked up in."""

    calls_remade: int = 0
    sends_remade: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    api_retries: int = 0


def phase_at(phase_starts: Sequence[float], at: float) -> int:
    """The phase a moment falls in, given when phases 1, 2, ... began (phase 0 before the first)."""
    return bisect.bisect_right(phase_starts, at)


def redone_by_phase(
    phase_starts: Sequence[float], observed: Observed, recovered: Sequence[Recovered], retries: Mapping[int, int]
) -> dict[int, Redone]:
    """Calls and sends made again under the same key (every request after a key's first), what the services'
    recovery and sweeps picked up, and the API calls the driver had to retry, by the phase they happened in."""
    redone: dict[int, Redone] = defaultdict(Redone)
    for phase in range(len(phase_starts) + 1):
        redone[phase].api_retries = retries.get(phase, 0)
    seen: set[tuple[str, str]] = set()
    for request in sorted(observed.calls, key=lambda call: call.at):
        if (request.instance_id, request.idempotency_key) in seen:
            redone[phase_at(phase_starts, request.at)].calls_remade += 1
        seen.add((request.instance_id, request.idempotency_key))
    sent: set[str] = set()
    for send in sorted(observed.sends, key=lambda send: send.at):
        if send.idempotency_key in sent:
            redone[phase_at(phase_starts, send.at)].sends_remade += 1
        sent.add(send.idempotency_key)
    for item in recovered:
        redone[phase_at(phase_starts, item.at)].counts[item.what] += item.count
    return dict(sorted(redone.items()))


def render_redone(labels: Mapping[int, str], redone: Mapping[int, Redone], kinds: Sequence[str]) -> str:
    """What each phase picked up again, as a fixed-width table (`kinds`: the recovered counts, in order)."""
    headers = ["calls re-made same key", "sends re-made same key", *kinds, "api calls retried"]
    rows = [
        (
            labels.get(phase, f"phase {phase}"),
            [r.calls_remade, r.sends_remade, *(r.counts[k] for k in kinds), r.api_retries],
        )
        for phase, r in redone.items()
    ]
    label_width = max(len(label) for label, _ in rows)
    header = " | ".join([f"{'phase':<{label_width}}", *headers])
    lines = [header, "-" * len(header)]
    for label, values in rows:
        cells = [f"{value:>{len(name)}}" for name, value in zip(headers, values, strict=True)]
        lines.append(" | ".join([f"{label:<{label_width}}", *cells]))
    return "\n".join(lines)


# The columns of the figures table: (header, Figures attribute).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("started", "started"),
    ("completed", "completed"),
    ("lost", "lost"),
    ("dup inst", "duplicate_instances"),
    ("wrong state", "wrong_state"),
    ("dup steps", "duplicate_steps"),
    ("deliveries", "deliveries"),
    ("dup deliv", "duplicate_deliveries"),
    ("unsent", "unsent_deliveries"),
    ("webhook calls", "calls"),
    ("call under new key", "calls_new_key"),
)


def render_table(labels: Mapping[int, str], verdict: Verdict) -> str:
    """The figures as a fixed-width table: one row per phase (labelled by `labels`), then the total."""
    rows = [(labels.get(phase, f"phase {phase}"), figures) for phase, figures in verdict.phases.items()]
    rows.append(("total", verdict.total))
    label_width = max(len(label) for label, _ in rows)
    header = " | ".join([f"{'phase':<{label_width}}", *(name for name, _ in COLUMNS)])
    lines = [header, "-" * len(header)]
    for label, figures in rows:
        cells = [f"{getattr(figures, attribute):>{len(name)}}" for name, attribute in COLUMNS]
        lines.append(" | ".join([f"{label:<{label_width}}", *cells]))
    return "\n".join(lines)
