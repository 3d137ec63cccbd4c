"""Instance execution (SPEC 5, 6): the walker, one run per transaction, waits, events, migration, recovery.

`walker` is pure traversal; `run` executes nodes against `db_context` inside one transaction; `store` holds every
SQL statement of the hot paths (SQLAlchemy Core); `starts`, `resumes`, `events`, `lifecycle`, `migration` and
`recovery` are the operations the EngineService RPCs call.
"""
