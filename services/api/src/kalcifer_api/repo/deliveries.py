"""Deliveries, read straight from PostgreSQL for the calling tenant.

The engine creates deliveries and the scheduler moves their status; the API only reads them (and remembers the
answers of relayed status reports for `request_id` replay).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from kalcifer_common.db.models import Delivery
from kalcifer_common.errors import InvalidArgument, NotFound
from kalcifer_common.pagination import PageCursor
from sqlalchemy import Table, select, tuple_

from kalcifer_api.domain.deliveries import DeliveryFilter, DeliveryRecord
from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_deliveries = cast(Table, Delivery.__table__)
_Response = TypeVar("_Response", bound=Message)


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        instance_id=row.instance_id,
        node_id=row.node_id,
        participant_id=row.participant_id,
        channel=row.channel,
        template_id=row.template_id or "",
        status=row.status,
        provider=row.provider or "",
        provider_message_id=row.provider_message_id or "",
        attempts=row.attempts,
        reason=row.last_error or "",
        idempotency_key=row.idempotency_key,
        send_after=row.send_after,
        create_time=row.create_time,
        update_time=row.update_time,
        sent_time=row.sent_time,
        final_time=row.final_time,
    )


def _position(cursor: PageCursor) -> Any:
    try:
        return tuple_(datetime.fromisoformat(cursor.sort_key), uuid.UUID(cursor.last_id))
    except ValueError:
        raise InvalidArgument.single("page_token", "is not a token this API issued") from None


class DeliveryRepository(IdempotentRepository):
    """The calling tenant's deliveries."""

    async def get(self, delivery_id: uuid.UUID) -> DeliveryRecord:
        """One delivery, or NOT_FOUND (also when it belongs to another tenant)."""
        query = select(_deliveries).where(_deliveries.c.tenant_id == self.tenant_id, _deliveries.c.id == delivery_id)
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound("delivery", str(delivery_id))
        return _delivery(row)

    async def list_page(self, where: DeliveryFilter, *, limit: int, after: PageCursor | None) -> list[DeliveryRecord]:
        """Deliveries newest first (create_time, then id, descending), up to `limit + 1` rows (the extra one says
        another page exists). The instance or participant filter keeps it on an index."""
        columns = _deliveries.c
        query = (
            select(_deliveries)
            .where(columns.tenant_id == self.tenant_id)
            .order_by(columns.create_time.desc(), columns.id.desc())
            .limit(limit + 1)
        )
        if where.instance_id is not None:
            query = query.where(columns.instance_id == where.instance_id)
        if where.participant_id is not None:
            query = query.where(columns.participant_id == where.participant_id)
        if where.status is not None:
            query = query.where(columns.status == where.status)
        if where.channel is not None:
            query = query.where(columns.channel == where.channel)
        if after is not None:
            query = query.where(tuple_(columns.create_time, columns.id) < _position(after))
        async with self._sessions() as session:
            return [_delivery(row) for row in (await session.execute(query)).all()]

    async def relay_once(
        self, method: str, request: Message, response_type: type[_Response], call: Callable[[], Awaitable[_Response]]
    ) -> _Response:
        """`call()`'s answer once per `request_id` (see `IdempotentRepository._call_once`: no transaction is open
        while the scheduler is asked; applying the same report twice changes nothing there)."""
        reply: Reply[_Response, _Response] = Reply(
            method=method, request=request, response_type=response_type, present=lambda answer: answer
        )
        return await self._call_once(reply, call)
