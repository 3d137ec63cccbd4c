"""Flow instances and execution steps, read straight from PostgreSQL for the calling tenant.

The engine is the only writer of these tables; the API only reads them, so reads cost no engine call and scale
with database replicas. Every query carries the caller's tenant: another tenant's instance is simply not found.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from kalcifer_common.db.models import ExecutionStep, FlowInstance, Wait
from kalcifer_common.errors import NotFound
from kalcifer_common.pagination import PageCursor
from kalcifer_common.statuses import InstanceStatus, WaitStatus
from sqlalchemy import Table, Text, Uuid, func, literal, null, select, tuple_

from kalcifer_api.domain.instances import (
    InstanceFilter,
    InstanceRecord,
    StepRecord,
    StuckFilter,
    StuckReason,
    StuckRecord,
    current_node_ids,
    step_branch,
)
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_instances = cast(Table, FlowInstance.__table__)
_steps = cast(Table, ExecutionStep.__table__)
_waits = cast(Table, Wait.__table__)
# What `_instance` reads: the columns both halves of the stuck report select.
_INSTANCE_COLUMNS = (
    "id",
    "flow_id",
    "version_number",
    "participant_id",
    "status",
    "current_nodes",
    "context",
    "exit_reason",
    "enter_time",
    "end_time",
)
_Response = TypeVar("_Response", bound=Message)


def _instance(row: Any) -> InstanceRecord:
    return InstanceRecord(
        id=row.id,
        flow_id=row.flow_id,
        version_number=row.version_number,
        participant_id=row.participant_id,
        status=row.status,
        current_nodes=current_node_ids(row.current_nodes),
        context=row.context if isinstance(row.context, dict) else {},
        exit_reason=row.exit_reason or "",
        enter_time=row.enter_time,
        end_time=row.end_time,
    )


def _step(row: Any) -> StepRecord:
    return StepRecord(
        id=row.id,
        instance_id=row.instance_id,
        seq=row.seq,
        node_id=row.node_id,
        node_type=row.node_type,
        version_number=row.version_number,
        status=row.status,
        input=row.input if isinstance(row.input, dict) else {},
        output=row.output,
        error=row.error or "",
        branch=step_branch(row.output),
        start_time=row.start_time,
        end_time=row.end_time,
    )


def _instance_position(cursor: PageCursor) -> Any:
    return tuple_(*cursor.time_and_id())


def _step_position(cursor: PageCursor) -> int:
    return cursor.number()


class InstanceRepository(IdempotentRepository):
    """The calling tenant's instances and their steps."""

    async def get(self, instance_id: uuid.UUID) -> InstanceRecord:
        """One instance, or NOT_FOUND (also when it belongs to another tenant)."""
        query = select(_instances).where(_instances.c.tenant_id == self.tenant_id, _instances.c.id == instance_id)
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound("instance", str(instance_id))
        return _instance(row)

    async def list_instances(
        self, where: InstanceFilter, *, limit: int, after: PageCursor | None
    ) -> list[InstanceRecord]:
        """Instances newest first (enter_time, then id, descending), keyset-paginated; returns up to `limit + 1`
        rows so the caller knows whether another page exists."""
        query = (
            select(_instances)
            .where(_instances.c.tenant_id == self.tenant_id)
            .order_by(_instances.c.enter_time.desc(), _instances.c.id.desc())
            .limit(limit + 1)
        )
        if where.flow_id is not None:
            query = query.where(_instances.c.flow_id == where.flow_id)
        if where.status is not None:
            query = query.where(_instances.c.status == where.status)
        if where.participant_id is not None:
            query = query.where(_instances.c.participant_id == where.participant_id)
        if after is not None:
            query = query.where(tuple_(_instances.c.enter_time, _instances.c.id) < _instance_position(after))
        async with self._sessions() as session:
            return [_instance(row) for row in (await session.execute(query)).all()]

    async def list_steps(self, instance_id: uuid.UUID, *, limit: int, after: PageCursor | None) -> list[StepRecord]:
        """An instance's steps in execution order (`seq`), keyset-paginated (up to `limit + 1` rows); NOT_FOUND
        when the instance is not the caller's."""
        tenant_id = self.tenant_id
        query = (
            select(_steps)
            .where(_steps.c.tenant_id == tenant_id, _steps.c.instance_id == instance_id)
            .order_by(_steps.c.seq)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(_steps.c.seq > _step_position(after))
        exists = select(_instances.c.id).where(_instances.c.tenant_id == tenant_id, _instances.c.id == instance_id)
        async with self._sessions() as session:
            if (await session.execute(exists)).first() is None:
                raise NotFound("instance", str(instance_id))
            return [_step(row) for row in (await session.execute(query)).all()]

    async def list_stuck(self, where: StuckFilter, *, limit: int, after: PageCursor | None) -> list[StuckRecord]:
        """Stuck instances, stuck longest first (since, then id), keyset-paginated (up to `limit + 1` rows).

        Overdue waits are found from the partial index of pending waits by fire time, so the report reads only
        what is late (few, in a healthy system) however many instances wait on time. Times are the database's
        `now()`, the clock the engine's fire times and updates are compared with everywhere else.
        """
        instance_columns = [_instances.c[name] for name in _INSTANCE_COLUMNS]
        overdue = (
            select(_waits.c.instance_id, _waits.c.id, _waits.c.node_id, _waits.c.kind, _waits.c.fire_time)
            .where(
                _waits.c.tenant_id == self.tenant_id,
                _waits.c.status == WaitStatus.PENDING,
                _waits.c.fire_time < func.now() - where.overdue,
            )
            .distinct(_waits.c.instance_id)
            .order_by(_waits.c.instance_id, _waits.c.fire_time)
            .subquery("overdue")
        )
        waiting = (
            select(
                *instance_columns,
                literal(StuckReason.WAIT_OVERDUE.value, Text).label("reason"),
                overdue.c.fire_time.label("since"),
                overdue.c.id.label("wait_id"),
                overdue.c.node_id.label("wait_node_id"),
                overdue.c.kind.label("wait_kind"),
            )
            .join_from(_instances, overdue, overdue.c.instance_id == _instances.c.id)
            .where(_instances.c.tenant_id == self.tenant_id, _instances.c.status == InstanceStatus.WAITING)
        )
        running = select(
            *instance_columns,
            literal(StuckReason.NO_PROGRESS.value, Text).label("reason"),
            _instances.c.update_time.label("since"),
            null().cast(Uuid).label("wait_id"),
            literal("", Text).label("wait_node_id"),
            literal("", Text).label("wait_kind"),
        ).where(
            _instances.c.tenant_id == self.tenant_id,
            _instances.c.status == InstanceStatus.RUNNING,
            _instances.c.update_time < func.now() - where.idle,
        )
        if where.flow_id is not None:
            waiting = waiting.where(_instances.c.flow_id == where.flow_id)
            running = running.where(_instances.c.flow_id == where.flow_id)
        stuck = waiting.union_all(running).subquery("stuck")
        query = select(stuck).order_by(stuck.c.since, stuck.c.id).limit(limit + 1)
        if after is not None:
            query = query.where(tuple_(stuck.c.since, stuck.c.id) > _instance_position(after))
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            StuckRecord(
                instance=_instance(row),
                reason=StuckReason(row.reason),
                since=row.since,
                wait_id=row.wait_id,
                node_id=row.wait_node_id,
                wait_kind=row.wait_kind,
            )
            for row in rows
        ]

    async def run_idempotent(
        self,
        *,
        method: str,
        request: Message,
        response_type: type[_Response],
        compute: Callable[[], Awaitable[_Response]],
    ) -> _Response:
        """`compute` once per request_id of the caller; without a request_id it just runs. No transaction is open
        while `compute` asks the engine (`IdempotentRepository._call_once`); the answer is remembered after it."""
        reply: Reply[_Response, _Response] = Reply(
            method=method, request=request, response_type=response_type, present=lambda answer: answer
        )
        return await self._call_once(reply, compute)
