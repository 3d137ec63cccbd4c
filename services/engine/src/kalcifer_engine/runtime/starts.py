"""Starting instances (SPEC 5 entry, 6.1 context, 6.3 re-entry): StartInstance and event-started flows."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from kalcifer_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kalcifer_common.statuses import FlowStatus, InstanceStatus
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.graph import FlowGraph
from kalcifer_engine.domain.tallies import Cohort
from kalcifer_engine.repo.instances import Entry, InstanceRow, enter_flow
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.group_commit import GroupCommit, Refused
from kalcifer_engine.runtime.replay import Replay
from kalcifer_engine.runtime.run import Effects, InstanceRun

ALREADY_IN_FLOW = "ALREADY_IN_FLOW"

_R = TypeVar("_R", bound=Message)


@dataclass(frozen=True)
class StartRequest:
    """What starting an instance needs, already parsed at the edge."""

    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    participant_id: str
    context: Mapping[str, Any]
    entry_node_ids: tuple[str, ...] = ()  # empty = every trigger node
    event: Mapping[str, Any] | None = None


def initial_context(request: StartRequest, instance_id: uuid.UUID, customer: dict[str, Any] | None) -> dict[str, Any]:
    """SPEC 6.1: trigger context at the root, `customer`, `event`, `accumulated` and the `_` identity keys."""
    context: dict[str, Any] = dict(request.context)
    if customer is not None:
        context["customer"] = customer
    if request.event is not None:
        context["event"] = dict(request.event)
    context.setdefault("accumulated", {})
    context["_participant_id"] = request.participant_id
    context["_flow_id"] = str(request.flow_id)
    context["_tenant_id"] = str(request.tenant_id)
    context["_instance_id"] = str(instance_id)
    return context


# What refuses a start before it wrote anything (no flow, not active, no version, already in the flow): a shared
# transaction stays good for the other starts in it.
REFUSALS: tuple[type[Exception], ...] = (NotFound, FailedPrecondition, AlreadyExists)


@dataclass(frozen=True)
class Admitted:
    """A start the flow admitted: its instance row is inserted (in the caller's transaction), not yet run."""

    instance_id: uuid.UUID
    entry: Entry


async def admit(
    conn: AsyncConnection, request: StartRequest, *, now: datetime, skip_if_in_flow: bool = False
) -> Admitted | None:
    """Insert the instance if the flow admits the participant; refusals raise one of `REFUSALS` having written
    nothing: NOT_FOUND (flow), FAILED_PRECONDITION (FLOW_NOT_ACTIVE, NO_ACTIVE_VERSION), ALREADY_EXISTS
    ALREADY_IN_FLOW; with `skip_if_in_flow` the last is None instead (event entries)."""
    instance_id = uuid.uuid4()
    entry = await enter_flow(
        conn,
        tenant_id=request.tenant_id,
        flow_id=request.flow_id,
        participant_id=request.participant_id,
        instance_id=instance_id,
        context=initial_context(request, instance_id, None),
        now=now,
    )
    if entry is None:
        raise NotFound("flow", f"flows/{request.flow_id}")
    if entry.flow_status != FlowStatus.ACTIVE:
        raise FailedPrecondition("FLOW_NOT_ACTIVE", f"flow {request.flow_id} is {entry.flow_status}, not active")
    if entry.version_number is None:
        raise FailedPrecondition("NO_ACTIVE_VERSION", f"flow {request.flow_id} has no active version")
    if entry.context is None:
        if skip_if_in_flow:
            return None
        raise _already_in_flow(request)
    return Admitted(instance_id, entry)


async def run_admitted(
    rt: Runtime,
    conn: AsyncConnection,
    request: StartRequest,
    admitted: Admitted,
    effects: Effects,
    *,
    now: datetime,
    graph: FlowGraph | None = None,
) -> uuid.UUID:
    """Run an admitted instance to its first waits or its end, inside the caller's transaction.

    Raises INVALID_ARGUMENT (an entry node that is not a trigger of the version) after the instance row was
    written: the caller's transaction must roll back.
    """
    entry, instance_id = admitted.entry, admitted.instance_id
    # admit() checked both
    assert entry.version_number is not None
    assert entry.context is not None
    version = entry.version_number
    if graph is None:
        graph = await rt.graph(conn, request.flow_id, version)
    registry = await rt.registry(conn, request.tenant_id)
    triggers = [node.id for node in graph.trigger_nodes(registry)]
    for entry_node in request.entry_node_ids:
        if entry_node not in triggers:
            # Raising rolls the caller's transaction back, the inserted instance with it.
            raise InvalidArgument.single("entry_node_id", f"{entry_node!r} is not a trigger node of version {version}")
    heads = list(request.entry_node_ids) or triggers
    effects.tally.instance_entered(Cohort.of(request.tenant_id, request.flow_id, version, now))
    instance = InstanceRow(
        id=instance_id,
        tenant_id=request.tenant_id,
        flow_id=request.flow_id,
        version_number=version,
        participant_id=request.participant_id,
        status=InstanceStatus.RUNNING,
        current_nodes=[],
        context=dict(entry.context),
        flow_status=entry.flow_status,
        enter_time=now,
    )
    run = InstanceRun(conn, instance, graph, registry, rt.settings, now, rt.expressions)
    await run.start(heads)
    await run.finish()
    effects.extend(run.effects)
    return instance_id


async def start_instance(
    rt: Runtime,
    conn: AsyncConnection,
    request: StartRequest,
    effects: Effects,
    *,
    now: datetime,
    skip_if_in_flow: bool = False,
    graph: FlowGraph | None = None,
) -> uuid.UUID | None:
    """Create the instance and run it to its first waits or its end, inside the caller's transaction: `admit`,
    then `run_admitted` (it raises what they raise)."""
    admitted = await admit(conn, request, now=now, skip_if_in_flow=skip_if_in_flow)
    if admitted is None:
        return None
    return await run_admitted(rt, conn, request, admitted, effects, now=now, graph=graph)


async def _start_in(
    rt: Runtime, conn: AsyncConnection, request: StartRequest, effects: Effects, now: datetime
) -> uuid.UUID:
    try:
        admitted = await admit(conn, request, now=now)
    except REFUSALS as refusal:
        raise Refused(refusal) from refusal
    assert admitted is not None  # only event entries (skip_if_in_flow) start nothing
    return await run_admitted(rt, conn, request, admitted, effects, now=now)


def grouped_starts(rt: Runtime) -> GroupCommit[StartRequest, uuid.UUID]:
    """StartInstance without a `request_id` (whose replay record needs a transaction of its own), in shared
    transactions (`group_commit`): what `admit` refuses wrote nothing; what `run_admitted` raises did."""
    return GroupCommit(rt, "StartInstance", _start_in)


async def start_instance_once(
    rt: Runtime, request: StartRequest, replay: Replay[_R], answer: Callable[[uuid.UUID], _R]
) -> _R:
    """StartInstance: start the instance and run it to its first waits in one transaction, which also remembers
    `answer(instance id)` for the call's `request_id` (a retry replays it); scheduler calls follow the commit.

    Raises what `start_instance` raises; the transaction then rolls back, the request id's reservation with it.
    """
    effects = Effects()
    async with rt.transaction(effects) as conn:

        async def compute() -> _R:
            instance_id = await start_instance(rt, conn, request, effects, now=rt.now())
            assert instance_id is not None  # only event entries (skip_if_in_flow) start nothing
            return answer(instance_id)

        response = await replay.once(conn, str(request.tenant_id), compute)
    await rt.after_commit(effects)
    return response


def _already_in_flow(request: StartRequest) -> AlreadyExists:
    return AlreadyExists(
        f"participant {request.participant_id!r} is already in flow {request.flow_id}",
        reason=ALREADY_IN_FLOW,
        metadata={"flow_id": str(request.flow_id), "participant_id": request.participant_id},
    )
