"""Database URLs: one `postgresql://` URL in the environment, the driver each consumer needs derived from it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_ASYNC_SCHEME = "postgresql+asyncpg"
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def _split_scheme(url: str) -> tuple[str, str]:
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"not a database URL (no scheme): {url!r}")
    dialect, _, _driver = scheme.partition("+")
    if dialect.lower() not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: scheme {scheme!r}")
    return scheme, rest


def _rename_parameter(rest: str, old: str, new: str) -> str:
    """Rename one query parameter, leaving every other byte of the URL (encoding included) as it was."""
    base, separator, query = rest.partition("?")
    if not separator:
        return rest
    pairs = []
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        pairs.append(f"{new}{equals}{value}" if key == old else pair)
    return f"{base}?{'&'.join(pairs)}"


def to_async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form (`postgresql+asyncpg://...`) of any PostgreSQL URL.

    The rest of the URL is kept verbatim, so `?host=/run/postgresql` (a unix socket directory, which asyncpg
    understands) survives; libpq's `sslmode=` becomes asyncpg's `ssl=`, which takes the same values.
    """
    _, rest = _split_scheme(url)
    return f"{_ASYNC_SCHEME}://{_rename_parameter(rest, 'sslmode', 'ssl')}"


def to_sync_url(url: str) -> str:
    """The libpq form (`postgresql://...`, no driver) of any PostgreSQL URL: what asyncpg.connect and psql take."""
    _, rest = _split_scheme(url)
    return f"postgresql://{_rename_parameter(rest, 'ssl', 'sslmode')}"


def with_database(url: str, database: str) -> str:
    """The same server URL (scheme, credentials, host and query kept) pointing at database `database`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
