"""Which database failures a retry can get past (PostgreSQL down, restarting, out of connections, a deadlock), as
opposed to bugs: the one rule every service answers UNAVAILABLE (retry) by, instead of INTERNAL."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError

# SQLSTATEs of failures a retry can get past: serialization/deadlock, shutdown, connection trouble, too many
# connections. Everything else a statement raises is a bug and stays INTERNAL.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, asyncpg.InterfaceError | asyncpg.PostgresConnectionError | ConnectionError | TimeoutError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
    else:
        sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and (sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08"))


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database is down, restarting, out of connections or deadlocked: a failure a retry
    can get past (a transaction that failed changed nothing), not a bug.

    SQLAlchemy's asyncpg adapter raises its own DB-API classes (not `DBAPIError`) where it calls the driver outside
    a statement (starting a transaction on a connection the server cut): those are judged by the driver's error
    they were raised from."""
    if isinstance(
        error, DBAPIError | asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError
    ) and _is_transient(error):
        return True
    cause = error.__cause__
    return cause is not None and cause is not error and database_unavailable(cause)
