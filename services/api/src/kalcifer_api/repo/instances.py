"""Flow instances and execution steps, read straight from PostgreSQL for the calling tenant.

The engine is the only writer of these tables; the API only reads them, so reads cost no engine call and scale
with database replicas. Every query carries the caller's tenant: another tenant's instance is simply not found.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from kalcifer_common.db.models import ExecutionStep, FlowInstance
from kalcifer_common.errors import NotFound
from kalcifer_common.pagination import PageCursor
from sqlalchemy import Table, select, tuple_

from kalcifer_api.domain.instances import InstanceFilter, InstanceRecord, StepRecord, current_node_ids, step_branch
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_instances = cast(Table, FlowInstance.__table__)
_steps = cast(Table, ExecutionStep.__table__)
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
