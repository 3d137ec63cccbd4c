"""The analytics counters a transaction changes, gathered while it runs (`Tally`) and written once, in key order,
just before it commits (`repo.counters.write_tally`), so the counters change with what they count or not at all.

Writing them last and in one order is also what keeps concurrent transactions from deadlocking on counter rows:
a transaction waits for a counter row only in its last statement, and every transaction takes its rows in the same
order. Which day and version each counter is kept under is `kalcifer_common.analytics`'s rule; this module speaks
of what happened (an instance entered, changed status, moved version, converted; a step was written or changed;
an instance first reached a node; a participant was assigned or converted) and turns it into increments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from kalcifer_common.analytics import (
    FLOW_ITSELF,
    TIMED_STEP_STATUSES,
    CounterName,
    day_of,
    step_counter,
    time_bucket,
)
from kalcifer_common.statuses import InstanceStatus, StepStatus


@dataclass(frozen=True, order=True)
class CounterKey:
    """One counter of one flow (before sharding)."""

    flow_id: uuid.UUID
    node_id: str
    counter: str
    day: date
    version_number: int
    label: str = ""


@dataclass(frozen=True)
class Cohort:
    """Where an instance's flow counters are kept: its flow, its current version and the UTC day it entered."""

    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    version_number: int
    enter_day: date

    @classmethod
    def of(cls, tenant_id: uuid.UUID, flow_id: uuid.UUID, version_number: int, enter_time: datetime) -> Cohort:
        """The cohort of an instance that entered at `enter_time`."""
        return cls(tenant_id, flow_id, version_number, day_of(enter_time))

    def key(self, counter: str) -> CounterKey:
        """This cohort's flow counter `counter`."""
        return CounterKey(self.flow_id, FLOW_ITSELF, counter, self.enter_day, self.version_number)


@dataclass(frozen=True)
class StepFacts:
    """A step as the counters see it: where it ran, when it started, and (once it ended) how and when."""

    node_id: str
    node_type: str
    version_number: int
    start_time: datetime
    status: str
    output: object = None
    end_time: datetime | None = None

    @property
    def branch(self) -> str | None:
        """The branch key a completed step returned (as recorded in its output), else None."""
        if self.status != StepStatus.COMPLETED or not isinstance(self.output, dict):
            return None
        branch = self.output.get("branch")
        return branch if isinstance(branch, str) else None


@dataclass(frozen=True)
class Assignment:
    """A participant's A/B variant at one `ab_split` node, and where its counters are kept."""

    node_id: str
    variant: str
    version_number: int
    assign_time: datetime


@dataclass(frozen=True)
class ConversionRecorded:
    """What recording a conversion found: whether it was recorded (a goal counts once per instance), whether the
    instance had converted before, and the participant's A/B assignments in the flow, each with whether this is
    their first conversion since it."""

    inserted: bool
    converted_before: bool
    assignments: tuple[tuple[Assignment, bool], ...] = ()


class Tally:
    """CounterName increments of one transaction, by key (the tenant of each flow alongside)."""

    def __init__(self) -> None:
        self._values: dict[CounterKey, int | Decimal] = {}
        self._tenants: dict[uuid.UUID, uuid.UUID] = {}

    def __bool__(self) -> bool:
        return any(self._values.values())

    def add(self, tenant_id: uuid.UUID, key: CounterKey, amount: int | Decimal = 1) -> None:
        """Add `amount` to one counter."""
        self._tenants[key.flow_id] = tenant_id
        self._values[key] = self._values.get(key, 0) + amount

    def extend(self, other: Tally) -> None:
        """Add another tally's increments (several runs share one transaction)."""
        for key, amount in other._values.items():
            self.add(other._tenants[key.flow_id], key, amount)

    def rows(self) -> list[tuple[uuid.UUID, CounterKey, int | Decimal]]:
        """(tenant, key, amount) of every counter that changes, in key order."""
        return [(self._tenants[key.flow_id], key, amount) for key, amount in sorted(self._values.items()) if amount]

    # --- instances: flow counters of their cohort ------------------------------------------------------------

    def instance_entered(self, cohort: Cohort) -> None:
        """A new instance, RUNNING."""
        self.add(cohort.tenant_id, cohort.key(CounterName.ENTERED))
        self.add(cohort.tenant_id, cohort.key(InstanceStatus.RUNNING))

    def status_changed(self, cohort: Cohort, old: str, new: str, count: int = 1) -> None:
        """`count` instances of the cohort went from status `old` to `new`."""
        if old != new and count:
            self.add(cohort.tenant_id, cohort.key(old), -count)
            self.add(cohort.tenant_id, cohort.key(new), count)

    def instance_converted(self, cohort: Cohort) -> None:
        """The instance recorded its first conversion."""
        self.add(cohort.tenant_id, cohort.key(CounterName.CONVERTED))

    def version_changed(self, cohort: Cohort, to_version: int, *, status: str, converted: bool) -> None:
        """The instance moved to another version: it now counts there (entered, status, converted), not here."""
        moved = Cohort(cohort.tenant_id, cohort.flow_id, to_version, cohort.enter_day)
        for counter in (CounterName.ENTERED, status, *([CounterName.CONVERTED] if converted else [])):
            self.add(cohort.tenant_id, cohort.key(counter), -1)
            self.add(cohort.tenant_id, moved.key(counter), 1)

    def node_reached(self, cohort: Cohort, node_id: str, version_number: int) -> None:
        """The instance's first step at `node_id` (on version `version_number`)."""
        key = CounterKey(cohort.flow_id, node_id, CounterName.REACHED, cohort.enter_day, version_number)
        self.add(cohort.tenant_id, key)

    # --- steps: by the day they started and their version ---------------------------------------------------

    def step_written(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, step: StepFacts) -> None:
        """A new step row."""
        self.add(tenant_id, self._step_key(flow_id, step, CounterName.STEP_ENTERED, step.node_type))
        self._step_in(tenant_id, flow_id, step)

    def step_changed(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, step: StepFacts, old_status: str) -> None:
        """A step row went from `old_status` to `step.status` (a wait's step resolved or was cancelled)."""
        if old_status == step.status:
            return
        self.add(tenant_id, self._step_key(flow_id, step, step_counter(old_status)), -1)
        self._step_in(tenant_id, flow_id, step)

    def _step_in(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, step: StepFacts) -> None:
        """The step is now in `step.status`: its status counter, its branch, and its time at the node."""
        self.add(tenant_id, self._step_key(flow_id, step, step_counter(step.status)))
        branch = step.branch
        if branch is not None:
            self.add(tenant_id, self._step_key(flow_id, step, CounterName.STEP_BRANCH, branch))
        if step.status in TIMED_STEP_STATUSES and step.end_time is not None:
            bucket = time_bucket(step.end_time - step.start_time)
            self.add(tenant_id, self._step_key(flow_id, step, CounterName.STEP_TIME, str(bucket)))

    @staticmethod
    def _step_key(flow_id: uuid.UUID, step: StepFacts, counter: str, label: str = "") -> CounterKey:
        return CounterKey(flow_id, step.node_id, counter, day_of(step.start_time), step.version_number, label)

    # --- A/B splits: by the day of the assignment and the version then --------------------------------------

    def participant_assigned(self, tenant_id: uuid.UUID, flow_id: uuid.UUID, assignment: Assignment) -> None:
        """A participant got their (sticky) variant at an ab_split node for the first time."""
        self.add(tenant_id, self._ab_key(flow_id, assignment, CounterName.AB_PARTICIPANTS))

    def assigned_converted(
        self,
        tenant_id: uuid.UUID,
        flow_id: uuid.UUID,
        assignment: Assignment,
        *,
        first: bool,
        revenue: Decimal | None,
    ) -> None:
        """An assigned participant recorded a conversion (`first`: their first since the assignment)."""
        if first:
            self.add(tenant_id, self._ab_key(flow_id, assignment, CounterName.AB_CONVERSIONS))
        if revenue:
            self.add(tenant_id, self._ab_key(flow_id, assignment, CounterName.AB_REVENUE), revenue)

    def conversion_recorded(self, cohort: Cohort, recorded: ConversionRecorded, revenue: Decimal | None) -> None:
        """A conversion of an instance of `cohort`: the instance's first counts as converted; every one counts for
        each variant the participant was assigned (the first since the assignment as a converted participant)."""
        if not recorded.inserted:
            return
        if not recorded.converted_before:
            self.instance_converted(cohort)
        for assignment, first in recorded.assignments:
            self.assigned_converted(cohort.tenant_id, cohort.flow_id, assignment, first=first, revenue=revenue)

    @staticmethod
    def _ab_key(flow_id: uuid.UUID, assignment: Assignment, counter: str) -> CounterKey:
        day = day_of(assignment.assign_time)
        return CounterKey(flow_id, assignment.node_id, counter, day, assignment.version_number, assignment.variant)
