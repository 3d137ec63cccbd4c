"""Which database failures answer UNAVAILABLE (retry) rather than INTERNAL (`kalcifer_common.db.errors`)."""

from __future__ import annotations

import asyncpg
from kalcifer_common.db.errors import database_unavailable


class _AdaptedInterfaceError(Exception):
    """Stands for SQLAlchemy's asyncpg adapter's own DB-API class (not a `DBAPIError`)."""


def _raised_from(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as error:
            raise _AdaptedInterfaceError("connection is closed") from error
    except _AdaptedInterfaceError as adapted:
        return adapted


def test_an_adapter_error_raised_from_a_closed_connection_is_unavailable() -> None:
    assert database_unavailable(_raised_from(asyncpg.InterfaceError("connection is closed")))


def test_an_adapter_error_raised_from_a_bug_is_not() -> None:
    assert not database_unavailable(_raised_from(asyncpg.exceptions.UndefinedColumnError("no such column")))
    assert not database_unavailable(_raised_from(ValueError("a bug")))
    assert not database_unavailable(_AdaptedInterfaceError("no cause"))


def test_the_driver_errors_themselves() -> None:
    assert database_unavailable(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert database_unavailable(ConnectionResetError())
    assert not database_unavailable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
